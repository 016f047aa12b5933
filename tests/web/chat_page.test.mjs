// The chat page in headless Chromium against a running server (`mtmd serve` or mock_server.py):
// load `/`, attach an image, send, watch the answer stream in, stop a second answer, and check
// that nothing went wrong on the way (console errors, page errors, failed or external requests).
//
//   MTMD_SERVER_URL=http://127.0.0.1:8080 node tests/web/chat_page.test.mjs
//
// Environment: MTMD_SERVER_URL (required), MTMD_ARTIFACTS_DIR (screenshots; default
// target/artifacts), MTMD_WEB_IMAGE (default tests/fixtures/gemma3/tiny.png),
// MTMD_WEB_TIMEOUT_S (per answer; default 180), CHROMIUM (default /usr/bin/chromium).
// Screenshots: web-chat.png after the first answer (image and answer), web-chat-2.png at the end.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const base = (process.env.MTMD_SERVER_URL || "").replace(/\/+$/, "");
const artifacts = path.resolve(repo, process.env.MTMD_ARTIFACTS_DIR || "target/artifacts");
const image = path.resolve(repo, process.env.MTMD_WEB_IMAGE || "tests/fixtures/gemma3/tiny.png");
const timeout = 1000 * Number(process.env.MTMD_WEB_TIMEOUT_S || 180);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}
const log = (msg) => console.log("web: " + msg);

async function main() {
  check(base, "MTMD_SERVER_URL is not set (e.g. http://127.0.0.1:8080)");
  check(fs.existsSync(executablePath), `${executablePath} not found (apt-get install chromium)`);
  check(fs.existsSync(image), `test image ${image} not found`);
  fs.mkdirSync(artifacts, { recursive: true });
  const origin = new URL(base).origin;

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mtmd-web-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    // Without the background-networking flags Chromium tries Google's hosts, which this kind of
    // machine refuses; they would also count as external requests.
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    viewport: { width: 1100, height: 800 },
  });
  const problems = [];
  let stopping = false; // the request cut by the Stop button fails on purpose
  let page;
  try {
    page = context.pages()[0] || (await context.newPage());
    page.on("console", (msg) => {
      if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("request", (req) => {
      const url = req.url();
      if (!url.startsWith(origin + "/") && !url.startsWith("data:") && !url.startsWith("blob:")) {
        problems.push(`external request: ${url}`);
      }
    });
    page.on("requestfailed", (req) => {
      const why = req.failure() ? req.failure().errorText : "failed";
      if (stopping && req.url().endsWith("/v1/chat/completions") && /ABORTED/.test(why)) return;
      problems.push(`request failed: ${req.method()} ${req.url()}: ${why}`);
    });
    page.on("response", (resp) => {
      if (resp.status() >= 400) problems.push(`HTTP ${resp.status()} for ${resp.request().method()} ${resp.url()}`);
    });

    const resp = await page.goto(base + "/", { waitUntil: "load" });
    check(resp && resp.status() === 200, `GET / answered ${resp && resp.status()}`);
    check((resp.headers()["content-type"] || "").startsWith("text/html"), `GET / content-type is ${resp.headers()["content-type"]}`);

    // The header fills in from /props and /v1/models.
    await page.waitForFunction(() => !/^(connecting|waiting)/.test(document.getElementById("model-name").textContent), null, { timeout: 60000 });
    const badges = await page.locator("#modalities .badge").allTextContents();
    const model = `${await page.textContent("#model-name")} [${badges.length ? badges.join(", ") : await page.textContent("#modalities")}]`;
    log(`model shown: ${model}`);
    check(!/unreachable|unknown model/.test(model), `the page could not read the model info: "${model}"`);
    check(await page.isEnabled("#attach-btn"), "the attach button is disabled although the server has an mmproj");

    // Settings: greedy and short, so a slow build still answers quickly.
    await page.click("#settings-btn");
    await page.fill("#temperature", "0");
    await page.fill("#max-tokens", process.env.MTMD_WEB_MAX_TOKENS || "16");
    await page.click("#settings-btn");

    // Turn 1: an image and a question.
    await page.setInputFiles("#file-input", image);
    await page.waitForSelector("#attachments img.thumb", { timeout: 10000 });
    await page.fill("#input", "What is in this image?");
    await page.press("#input", "Enter");
    check((await page.inputValue("#input")) === "", "the input was not cleared after sending");
    check((await page.locator("#attachments img").count()) === 0, "the pending thumbnail stayed after sending");
    await waitForAnswer(page, 1);
    const first = await answer(page, 1);
    log(`answer 1 (${first.pieces} pieces, ${first.stats}): ${JSON.stringify(first.text.slice(0, 120))}`);
    check(first.text.length > 0 && first.text !== "(empty answer)", "the first answer is empty");
    // The page counts the stream events that carried text (data-pieces on the answer).
    check(first.pieces >= 1, "no text streamed into the answer");
    if (/\blength\b/.test(first.stats) && !/^1 token\b/.test(first.stats)) {
      check(first.pieces >= 2, `the answer arrived in one piece (${first.pieces} event), not streamed`);
    }

    // The sent image is in the history as a loaded thumbnail.
    const thumbs = page.locator(".msg.user .images img.thumb");
    check((await thumbs.count()) === 1, `expected 1 thumbnail in the history, found ${await thumbs.count()}`);
    const loaded = await thumbs.first().evaluate((img) => img.complete && img.naturalWidth > 0);
    check(loaded, "the thumbnail in the history did not load");
    const shot = path.join(artifacts, "web-chat.png");
    await page.screenshot({ path: shot });
    log(`screenshot: ${shot}`);

    // Turn 2: a follow-up (the whole conversation, image included, goes again); stop it as soon
    // as text arrives. A fast model may finish first: either way the page must end idle with the
    // partial answer kept.
    await page.click("#settings-btn");
    await page.fill("#max-tokens", "1500");
    await page.click("#settings-btn");
    await page.fill("#input", "Tell me more.");
    await page.press("#input", "Enter");
    await page.waitForSelector("body[data-state=generating]", { timeout: 10000 }).catch(() => {});
    await page.waitForFunction(() => {
      const msgs = document.querySelectorAll(".msg.assistant");
      return msgs.length >= 2 && (msgs[1].querySelector(".content").textContent.length > 0 || document.body.dataset.state === "idle");
    }, null, { timeout });
    // Check and click in one step: the answer may end between a visibility check and a click.
    stopping = true;
    const clicked = await page.evaluate(() => {
      const stop = document.getElementById("stop-btn");
      if (stop.hidden) return false;
      stop.click();
      return true;
    });
    log(clicked ? "clicked Stop" : "the second answer ended before Stop could be clicked");
    await waitForAnswer(page, 2);
    const second = await answer(page, 2);
    log(`answer 2 (${second.stats}): ${JSON.stringify(second.text.slice(0, 120))}`);
    check(await page.isVisible("#send-btn"), "the Send button did not come back after the answer");

    const errors = await page.locator(".msg.error").allTextContents();
    check(errors.length === 0, `the page shows an error: ${errors.join(" | ")}`);
    await page.screenshot({ path: path.join(artifacts, "web-chat-2.png") });
    check(problems.length === 0, "problems seen in the browser:\n  " + problems.join("\n  "));
  } catch (e) {
    if (page) await page.screenshot({ path: path.join(artifacts, "web-chat-failure.png"), fullPage: true }).catch(() => {});
    if (problems.length && !(e instanceof Failure && e.message.startsWith("problems seen"))) {
      console.error("web: also seen in the browser:\n  " + problems.join("\n  "));
    }
    throw e;
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

// Generation of the n-th answer has finished: the page is idle and the answer has its stats line.
async function waitForAnswer(page, n) {
  await page.waitForFunction((n) => {
    const msgs = document.querySelectorAll(".msg.assistant");
    return document.body.dataset.state === "idle" &&
      (document.querySelectorAll(".msg.error").length > 0 || (msgs.length >= n && msgs[n - 1].querySelector(".stats")));
  }, n, { timeout });
  const errors = await page.locator(".msg.error").allTextContents();
  check(errors.length === 0, `answer ${n} failed: ${errors.join(" | ")}`);
}

async function answer(page, n) {
  return page.evaluate((n) => {
    const msg = document.querySelectorAll(".msg.assistant")[n - 1];
    return {
      text: msg.querySelector(".content").textContent,
      stats: (msg.querySelector(".stats") || {}).textContent || "",
      pieces: Number(msg.dataset.pieces || 0),
    };
  }, n);
}

main().then(
  () => {
    log("PASS");
  },
  (e) => {
    console.error(`web: FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
    process.exit(1);
  },
);
