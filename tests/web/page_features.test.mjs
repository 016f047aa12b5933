// The chat page's features against mock_server.py (started here, no engine needed): API key,
// paste / drop / remove attachments, Shift+Enter, the request it sends, HTML escaping and code
// blocks, error display (HTTP error and error event), Stop, New chat, system prompt, a server
// without vision that also ignores `stream: true`, and a server that takes audio: audio files
// attached with the picker and by drop (a player in the pending row and in the history, sent as
// `input_audio` parts), unsupported audio refused, and a microphone recording (Chromium's fake
// device) encoded to WAV in the page.
//
//   node tests/web/page_features.test.mjs
//
// Environment: MTMD_ARTIFACTS_DIR (failure screenshot; default target/artifacts), CHROMIUM.

import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "../..");
const artifacts = path.resolve(repo, process.env.MTMD_ARTIFACTS_DIR || "target/artifacts");
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const png = fs.readFileSync(path.join(repo, "tests/fixtures/gemma3/tiny.png")).toString("base64");
const wavPath = path.join(repo, "tests/fixtures/qwen2audio/short_0p1s_16k.wav");
const flacPath = path.join(repo, "tests/fixtures/qwen2audio/speech_a_16k_mono.flac");
const wav = fs.readFileSync(wavPath).toString("base64");

class Failure extends Error {}
function check(cond, message) {
  if (!cond) throw new Failure(message);
}
const log = (msg) => console.log("web-features: " + msg);

// Starts the mock on a free port; resolves to {url, stop}.
function startMock(extraArgs) {
  return new Promise((resolve, reject) => {
    const proc = spawn("python3", [path.join(here, "mock_server.py"), "--port", "0", "--delay", "0.01", ...extraArgs], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    let out = "";
    const timer = setTimeout(() => { proc.kill(); reject(new Error("the mock server did not start")); }, 10000);
    proc.on("error", (e) => { clearTimeout(timer); reject(e); });
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/mock server on (http:\/\/[\d.]+:\d+)\//);
      if (m) { clearTimeout(timer); resolve({ url: m[1], stop: () => proc.kill() }); }
    });
  });
}

// Puts an image on the page as a paste or a drop event (what a real clipboard / drag would do).
async function fireImageEvent(page, kind) {
  await page.evaluate(([kind, b64]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], kind + ".png", { type: "image/png" }));
    if (kind === "paste") {
      document.getElementById("input").dispatchEvent(new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true }));
    } else {
      const target = document.getElementById("messages");
      for (const type of ["dragenter", "dragover", "drop"]) {
        target.dispatchEvent(new DragEvent(type, { dataTransfer: dt, bubbles: true, cancelable: true }));
      }
    }
  }, [kind, png]);
}

async function sendAndWait(page, text) {
  const before = await page.locator(".msg.assistant .stats, .msg.error").count();
  await page.fill("#input", text);
  await page.press("#input", "Enter");
  await page.waitForFunction((before) => document.body.dataset.state === "idle" &&
    document.querySelectorAll(".msg.assistant .stats, .msg.error").length > before, before, { timeout: 20000 });
}

async function withPage(context, problems, fn) {
  const page = await context.newPage();
  page.on("console", (msg) => {
    // Statuses the test provokes on purpose (401 without the key, 400 for "/error").
    if (msg.type() === "error" && !/status of (401|400)/.test(msg.text())) problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  try {
    await fn(page);
  } catch (e) {
    await page.screenshot({ path: path.join(artifacts, "web-features-failure.png"), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await page.close();
  }
}

async function visionServer(context, problems) {
  const mock = await startMock(["--api-key", "sekret"]);
  try {
    await withPage(context, problems, async (page) => {
      const sent = [];
      page.on("request", (req) => {
        if (req.url().endsWith("/v1/chat/completions")) sent.push({ auth: req.headers().authorization, body: JSON.parse(req.postData() || "{}") });
      });
      await page.goto(mock.url + "/");
      await page.waitForFunction(() => document.getElementById("modalities").textContent.includes("API key"));
      log("without the key the page asks for it");

      await page.click("#settings-btn");
      await page.fill("#api-key", "sekret");
      await page.press("#api-key", "Tab"); // "change" stores it and reloads the model info
      await page.waitForFunction(() => document.getElementById("model-name").textContent === "mock-model");
      await page.reload();
      await page.waitForFunction(() => document.getElementById("model-name").textContent === "mock-model");
      check(await page.isEnabled("#attach-btn"), "attach is disabled on a vision server");
      log("the API key is kept in localStorage across reloads");

      await fireImageEvent(page, "paste");
      await page.waitForFunction(() => document.querySelectorAll("#attachments .pending").length === 1);
      await fireImageEvent(page, "drop");
      await page.waitForFunction(() => document.querySelectorAll("#attachments .pending").length === 2);
      check(await page.isHidden("#drop-overlay"), "the drop overlay stayed after the drop");
      await page.click("#attachments .pending:first-child button.remove");
      check((await page.locator("#attachments .pending").count()) === 1, "removing a pending image failed");
      log("paste, drop and remove of attachments work");

      await page.fill("#input", "line one");
      await page.press("#input", "Shift+Enter");
      await page.type("#input", "line two");
      check((await page.inputValue("#input")) === "line one\nline two", "Shift+Enter did not insert a newline");
      await page.click("#settings-btn");
      await page.fill("#temperature", "0.25");
      await page.fill("#max-tokens", "");
      await page.press("#input", "Enter");
      await page.waitForFunction(() => document.body.dataset.state === "idle" && document.querySelector(".msg.assistant .stats"));
      const req = sent[0];
      check(req && req.auth === "Bearer sekret", "the API key was not sent as a Bearer token");
      check(req.body.stream === true && req.body.model === "mock-model" && req.body.temperature === 0.25 && !("max_tokens" in req.body),
        "unexpected request fields: " + JSON.stringify({ ...req.body, messages: undefined }));
      const content = req.body.messages[0].content;
      check(Array.isArray(content) && content[0].type === "image_url" && content[0].image_url.url.startsWith("data:image/png;base64,") &&
        content[1].type === "text" && content[1].text === "line one\nline two", "unexpected user message: " + JSON.stringify(content).slice(0, 300));
      check((await page.locator(".msg.user .images img.thumb").count()) === 1, "the sent image is not in the history");
      log("the request carries the image as a data URI, the text, the settings and the key");

      check((await page.locator(".msg.assistant .content pre code").count()) === 1, "the code block was not rendered");
      const code = await page.textContent(".msg.assistant .content pre code");
      check(code.includes('println!("<b>not bold</b>");'), "the code block lost its text: " + code);
      check((await page.locator("#messages b").count()) === 0, "model output was rendered as HTML");
      log("answers are escaped; fenced code becomes a code block");

      await sendAndWait(page, "/error");
      check((await page.textContent(".msg.error")).includes("you asked for an error"), "the HTTP error is not shown");
      check((await page.locator(".msg.user.failed").count()) === 1, "the failed turn is not marked");
      await sendAndWait(page, "/stream-error");
      const errs = await page.locator(".msg.error").allTextContents();
      check(errs.length === 2 && errs[1].includes("in the middle"), "the error event is not shown: " + errs.join(" | "));
      const partial = await page.locator(".msg.assistant .content").last().textContent();
      check(partial.startsWith("Turn"), "the partial answer before the error event was dropped: " + partial);
      const lastBody = sent[sent.length - 1].body;
      check(!JSON.stringify(lastBody.messages).includes("/error\""), "the failed turn was sent again");
      check(lastBody.messages.length === 3, `expected 3 messages in the 3rd request, got ${lastBody.messages.length}`);
      log("HTTP errors and error events are shown; a failed turn leaves the conversation");

      await page.fill("#input", "/slow");
      await page.press("#input", "Enter");
      await page.waitForFunction(() => [...document.querySelectorAll(".msg.assistant .content")].pop()?.textContent.includes("word3"));
      await page.click("#stop-btn");
      await page.waitForFunction(() => document.body.dataset.state === "idle");
      const stats = await page.locator(".msg.assistant .stats").last().textContent();
      check(stats.includes("stopped"), "Stop did not end the answer: " + stats);
      check((await page.locator(".msg.assistant .content").last().textContent()).includes("word3"), "Stop dropped the partial answer");
      check(await page.isVisible("#send-btn"), "Send did not come back after Stop");
      log("Stop ends the stream and keeps the partial answer");

      await page.screenshot({ path: path.join(artifacts, "web-features.png"), fullPage: true });
      await page.click("#new-chat");
      check((await page.locator(".msg").count()) === 0 && (await page.isVisible("#empty")), "New chat did not clear the history");
      await page.fill("#system-prompt", "Be brief.");
      await sendAndWait(page, "hi");
      const fresh = sent[sent.length - 1].body.messages;
      check(fresh.length === 2 && fresh[0].role === "system" && fresh[0].content === "Be brief." && fresh[1].content === "hi",
        "unexpected messages after New chat: " + JSON.stringify(fresh));
      log("New chat starts over; the system prompt goes first");
    });
  } finally {
    mock.stop();
  }
}

async function textOnlyServer(context, problems) {
  const mock = await startMock(["--no-vision", "--ignore-stream"]);
  try {
    await withPage(context, problems, async (page) => {
      await page.goto(mock.url + "/");
      await page.waitForFunction(() => document.getElementById("model-name").textContent === "mock-model");
      check(await page.isDisabled("#attach-btn"), "attach is enabled on a server without vision");
      check((await page.getAttribute("#attach-btn", "title")).includes("--mmproj"), "the attach tooltip does not mention --mmproj");
      await fireImageEvent(page, "paste");
      await page.waitForFunction(() => document.getElementById("status").textContent.includes("--mmproj"));
      check((await page.locator("#attachments .pending").count()) === 0, "an image was attached on a server without vision");
      log("without vision, attaching is disabled and explained");

      await sendAndWait(page, "plain");
      const text = await page.textContent(".msg.assistant .content");
      check(text.includes("you said: plain"), "the non-streamed answer was not shown: " + text);
      check((await page.locator(".msg.error").count()) === 0, "a non-streamed answer was taken for an error");
      log("a server that ignores stream: true still gets its answer shown");
    });
  } finally {
    mock.stop();
  }
}

// Drops a file (base64 `b64`, `name`, MIME `type`) on the page.
async function dropFile(page, b64, name, type) {
  await page.evaluate(([b64, name, type]) => {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], name, { type }));
    const target = document.getElementById("messages");
    for (const kind of ["dragenter", "dragover", "drop"]) {
      target.dispatchEvent(new DragEvent(kind, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, [b64, name, type]);
}

async function audioServer(context, problems) {
  const mock = await startMock(["--audio"]);
  try {
    await withPage(context, problems, async (page) => {
      const sent = [];
      page.on("request", (req) => {
        if (req.url().endsWith("/v1/chat/completions")) sent.push(JSON.parse(req.postData() || "{}"));
      });
      await page.goto(mock.url + "/");
      await page.waitForFunction(() => document.getElementById("modalities").textContent.includes("audio"));
      check(await page.isEnabled("#attach-btn"), "attach is disabled on an audio server");
      check((await page.getAttribute("#attach-btn", "title")).includes("audio"), "the attach tooltip does not mention audio");
      check((await page.getAttribute("#file-input", "accept")).includes(".wav"), "the file picker does not offer audio");

      // The picker (what a user's file choice does), then a drop, then an image.
      await page.setInputFiles("#file-input", [wavPath, flacPath]);
      await page.waitForFunction(() => document.querySelectorAll("#attachments .pending.audio audio[controls]").length === 2);
      await dropFile(page, png, "drop.png", "image/png");
      await page.waitForFunction(() => document.querySelectorAll("#attachments .pending").length === 3);
      await dropFile(page, wav, "dropped.wav", "audio/wav");
      await page.waitForFunction(() => document.querySelectorAll("#attachments .pending.audio").length === 3);
      await page.click("#attachments .pending:nth-child(2) button.remove");
      check((await page.locator("#attachments .pending.audio").count()) === 2, "removing a pending clip failed");
      // Audio the server cannot decode is refused in the page.
      await dropFile(page, wav, "voice.ogg", "audio/ogg");
      await page.waitForFunction(() => document.getElementById("status").textContent.includes("WAV, MP3 and FLAC"));
      check((await page.locator("#attachments .pending").count()) === 3, "an ogg clip was attached");
      log("audio files attach with the picker and by drop, each with a player; ogg is refused");

      await sendAndWait(page, "What do you hear?");
      const content = sent[0].messages[0].content;
      const kinds = content.map((p) => p.type).join(",");
      check(kinds === "input_audio,image_url,input_audio,text", "unexpected parts: " + kinds);
      check(content[0].input_audio.format === "wav" && content[0].input_audio.data === wav,
        "the picked WAV was not sent as bare base64: " + JSON.stringify(content[0]).slice(0, 200));
      check(content[2].input_audio.format === "wav" && content[2].input_audio.data === wav, "the dropped WAV was not sent");
      check((await page.locator(".msg.user .images audio[controls]").count()) === 2, "the sent clips are not in the history");
      check((await page.locator(".msg.user .images img.thumb").count()) === 1, "the sent image is not in the history");
      const answer = await page.locator(".msg.assistant .content").last().textContent();
      check(answer.includes("2 audio clip(s)"), "the answer does not mention the clips: " + answer);
      const duration = await page.evaluate(() => new Promise((resolve) => {
        const a = document.querySelector(".msg.user .images audio");
        if (a.readyState >= 1) resolve(a.duration);
        else a.addEventListener("loadedmetadata", () => resolve(a.duration), { once: true });
      }));
      check(Math.abs(duration - 0.1) < 0.02, "the history player does not play the clip (duration " + duration + ")");
      log("the clips go as input_audio parts and play in the history");

      // The microphone (Chromium's fake device): a WAV recorded in the page.
      check(await page.isVisible("#record-btn"), "no Record button on an audio server");
      await page.click("#record-btn");
      await page.waitForFunction(() => document.getElementById("record-btn").classList.contains("recording"));
      await page.waitForTimeout(700);
      await page.click("#record-btn");
      await page.waitForFunction(() => document.querySelectorAll("#attachments .pending.audio").length === 1);
      await sendAndWait(page, "and this?");
      const rec = sent[1].messages[2].content[0];
      check(rec.type === "input_audio" && rec.input_audio.format === "wav", "the recording was not sent as WAV");
      const head = Buffer.from(rec.input_audio.data, "base64");
      check(head.toString("latin1", 0, 4) === "RIFF" && head.toString("latin1", 8, 12) === "WAVE" &&
        head.readUInt16LE(20) === 1 && head.readUInt16LE(22) === 1 && head.readUInt16LE(34) === 16,
        "the recording is not a mono 16-bit PCM WAV");
      const rate = head.readUInt32LE(24);
      const seconds = head.readUInt32LE(40) / 2 / rate;
      check(seconds > 0.2 && seconds < 5, `the recording is ${seconds} s long at ${rate} Hz`);
      log(`a microphone recording is sent as a ${seconds.toFixed(2)} s mono 16-bit WAV at ${rate} Hz`);
      await page.screenshot({ path: path.join(artifacts, "web-audio.png"), fullPage: true });
    });
  } finally {
    mock.stop();
  }
}

async function main() {
  check(fs.existsSync(executablePath), `${executablePath} not found (apt-get install chromium)`);
  fs.mkdirSync(artifacts, { recursive: true });
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "mtmd-web-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      // A fake microphone that needs no permission prompt, for the Record button.
      "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"],
    viewport: { width: 1100, height: Number(process.env.MTMD_WEB_HEIGHT || 800) },
  });
  const problems = [];
  try {
    await visionServer(context, problems);
    await textOnlyServer(context, problems);
    await audioServer(context, problems);
    check(problems.length === 0, "problems seen in the browser:\n  " + problems.join("\n  "));
  } finally {
    await context.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main().then(
  () => log("PASS"),
  (e) => {
    console.error(`web-features: FAIL: ${e instanceof Failure ? e.message : e.stack || e}`);
    process.exit(1);
  },
);
