//! `mtmd serve` as a process: binds 127.0.0.1 on a free port, answers 503 then 200 on
//! /health, serves a chat completion with an image (plain and streamed), reports errors in
//! OpenAI's shape, counts in /metrics, and exits 1 with one `error:` line when the model
//! cannot load. Uses the tiny gemma3 fixture (random weights: the text is gibberish).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    testkit::fixture("gemma3").join(name)
}

/// The server process; killed when the test ends, however it ends.
struct Server {
    child: Child,
    base: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let model = fixture("model.gguf");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .arg("serve")
        .arg("-m")
        .arg(&model)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mtmd serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        child,
        base: String::new(),
        lines,
    };
    let line = server
        .wait_line(|l| l.starts_with("listening on "), Duration::from_secs(30))
        .expect("the server prints where it listens");
    server.base = line.trim_start_matches("listening on ").trim().to_owned();
    assert!(server.base.starts_with("http://127.0.0.1:"), "{line}");
    assert!(
        !server.base.ends_with(":0"),
        "the real port is printed: {line}"
    );
    server
}

impl Server {
    fn wait_line(&self, want: impl Fn(&str) -> bool, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    }

    fn get(&self, path: &str) -> (u16, String) {
        let mut r = Self::agent()
            .get(format!("{}{path}", self.base))
            .call()
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    fn post(&self, path: &str, body: &str) -> (u16, String) {
        let mut r = Self::agent()
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .send(body)
            .expect("POST");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, body) = self.get("/health");
            match status {
                200 => return,
                503 => assert!(body.contains("Loading model"), "{body}"),
                other => panic!("/health answered {other}: {body}"),
            }
            assert!(Instant::now() < deadline, "the model did not load in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn error_code(body: &str) -> String {
    let v: Value = serde_json::from_str(body).expect("error body is JSON");
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn serves_chat_with_an_image_and_reports_errors() {
    let mmproj = fixture("mmproj.gguf");
    let mmproj = mmproj.to_string_lossy();
    let server = start(&[
        "--mmproj",
        &mmproj,
        "--parallel",
        "2",
        "-c",
        "512",
        "--alias",
        "tiny-gemma",
    ]);
    server.wait_ready();
    assert!(
        server
            .wait_line(
                |l| l.starts_with("model loaded: tiny-gemma"),
                Duration::from_secs(5)
            )
            .is_some()
    );

    let (status, body) = server.get("/v1/models");
    assert_eq!(status, 200, "{body}");
    let models: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(models["data"][0]["id"], "tiny-gemma");
    assert_eq!(models["data"][0]["modalities"], json!(["text", "image"]));

    let png = std::fs::read(fixture("tiny.png")).expect("fixture");
    let url = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
    let request = json!({
        "model": "tiny-gemma",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in the picture?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
        "max_tokens": 4,
        "temperature": 0,
    });
    let (status, body) = server.post("/v1/chat/completions", &request.to_string());
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(reply["object"], "chat.completion");
    assert!(reply["choices"][0]["message"]["content"].is_string());
    let usage = &reply["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().unwrap_or(0) > 10,
        "image tokens count: {usage}"
    );
    assert!(
        usage["completion_tokens"].as_u64().unwrap_or(0) <= 4,
        "{usage}"
    );
    let finish = reply["choices"][0]["finish_reason"]
        .as_str()
        .unwrap_or_default();
    assert!(finish == "stop" || finish == "length", "{finish}");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let (status, body) = server.post("/v1/chat/completions", &streamed.to_string());
    assert_eq!(status, 200, "{body}");
    let data: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let usage_chunk: Value = serde_json::from_str(data[data.len() - 2]).expect("usage chunk");
    assert_eq!(usage_chunk["choices"], json!([]));

    // The same image again: served from the media cache, not encoded a second time.
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("mtmd_images_encoded_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("mtmd_slots_total 2\n"), "{metrics}");
    assert!(
        metrics
            .contains("mtmd_http_requests_total{path=\"/v1/chat/completions\",status=\"200\"} 2")
    );

    let (status, body) = server.post("/v1/chat/completions", "{\"messages\": [");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "invalid_json"),
        "{body}"
    );
    let mut wrong_model = request.clone();
    wrong_model["model"] = json!("gpt-4o");
    let (status, body) = server.post("/v1/chat/completions", &wrong_model.to_string());
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "model_not_found"),
        "{body}"
    );
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]}]});
    let (status, body) = server.post("/v1/chat/completions", &audio.to_string());
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "no_audio"),
        "{body}"
    );

    let (status, _) = server.get("/health");
    assert_eq!(status, 200, "still serving after the errors");
}

#[test]
fn api_key_guards_the_api_but_not_health() {
    // With every limit flag set, so their mapping onto the server's options is exercised.
    let server = start(&[
        "--api-key",
        "sekret",
        "--parallel",
        "1",
        "-c",
        "256",
        "--timeout",
        "30",
        "--header-timeout",
        "5",
        "--body-timeout",
        "5",
        "--max-connections",
        "8",
        "--max-queue",
        "2",
    ]);
    server.wait_ready();
    let (status, body) = server.get("/v1/models");
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "invalid_api_key"),
        "{body}"
    );
    let mut r = Server::agent()
        .get(format!("{}/v1/models", server.base))
        .header("authorization", "Bearer sekret")
        .call()
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200);
    let text = r.body_mut().read_to_string().expect("body");
    let models: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(models["data"][0]["modalities"], json!(["text"]));
}

#[test]
fn a_model_that_cannot_load_exits_1_with_one_error_line() {
    // A PNG is no GGUF: the server binds, fails the background load, and exits.
    let bad = fixture("tiny.png");
    let out = Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .arg("serve")
        .arg("-m")
        .arg(&bad)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .output()
        .expect("mtmd runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listening on http://127.0.0.1:"),
        "{stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
}

#[test]
fn serve_help_lists_the_limit_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(["serve", "--help"])
        .output()
        .expect("mtmd serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--timeout <SECONDS>",
        "--header-timeout <SECONDS>",
        "--body-timeout <SECONDS>",
        "--max-connections <N>",
        "--max-queue <N>",
        "--api-key",
        "--max-body-mb",
    ] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}
