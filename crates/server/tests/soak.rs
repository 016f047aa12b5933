//! A soak test against the real engine on the tiny Gemma 3 fixture (random weights, greedy,
//! so every answer is deterministic): 64 concurrent clients send a fixed number of requests
//! mixing streamed and plain text and image chats, bad requests and clients that hang up
//! mid-stream. Every good answer must equal the same request answered alone, every bad one
//! must be its 4xx, the engine must end idle, and resident memory must stay flat after a
//! warm-up (the figures are printed; only a generous bound is asserted). Its own test binary,
//! so the memory figures are this test's alone.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{Running, exchange, post, rss_bytes};
use serde_json::{Value, json};
use server::{AppState, Backend, Engine, EngineConfig, ServerOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENTS: usize = 64;
const WARM_UP: usize = 256;
const REQUESTS: usize = 1024;
const N_CTX: usize = 1024;
/// Resident growth allowed between the end of the warm-up and the end of the soak.
const MAX_GROWTH: u64 = 64 << 20;

fn b64_fixture(name: &str) -> String {
    let path = testkit::fixture("gemma3").join(name);
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("fixture"))
}

/// The requests the clients cycle through.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// A good chat (index into the references), streamed or not.
    Good { which: usize, stream: bool },
    /// Reads the first event of a long streamed answer, then hangs up.
    HangUp,
    /// A bad request and the status and code it must get.
    Bad { which: usize },
}

const KINDS: [Kind; 12] = [
    Kind::Good {
        which: 0,
        stream: true,
    },
    Kind::Good {
        which: 2,
        stream: true,
    },
    Kind::Bad { which: 0 },
    Kind::Good {
        which: 1,
        stream: true,
    },
    Kind::HangUp,
    Kind::Good {
        which: 3,
        stream: false,
    },
    Kind::Bad { which: 1 },
    Kind::Good {
        which: 0,
        stream: false,
    },
    Kind::Bad { which: 2 },
    Kind::Good {
        which: 3,
        stream: true,
    },
    Kind::Bad { which: 3 },
    Kind::Good {
        which: 2,
        stream: false,
    },
];

struct Fixtures {
    /// The good chats' bodies (without `stream`).
    good: Vec<Value>,
    /// Their answers, each asked alone before the soak.
    answers: Vec<String>,
    /// Bad bodies with the status and error code they must get.
    bad: Vec<(String, u16, &'static str)>,
}

fn image_chat(b64: &str, question: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}},
        {"type": "text", "text": question},
    ]}], "max_tokens": 8, "temperature": 0})
}

fn text_chat(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}], "max_tokens": 8, "temperature": 0})
}

fn fixtures() -> Fixtures {
    let tiny = b64_fixture("tiny.png");
    let photo = b64_fixture("photo2.jpg");
    let good = vec![
        text_chat("Hello there, how are you?"),
        text_chat("Count from one to five."),
        image_chat(&tiny, "What is in this picture?"),
        image_chat(&photo, "Describe the colors."),
    ];
    let too_long = text_chat(&"word ".repeat(2 * N_CTX)).to_string();
    let audio = json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}]});
    let bad = vec![
        (r#"{"messages": [{"role": "#.to_owned(), 400, "invalid_json"),
        (
            image_chat("@@@ not base64 @@@", "?").to_string(),
            400,
            "invalid_image",
        ),
        (too_long, 400, "invalid_request"),
        (audio.to_string(), 400, "no_audio"),
    ];
    Fixtures {
        good,
        answers: Vec::new(),
        bad,
    }
}

fn with_stream(body: &Value, stream: bool) -> String {
    let mut body = body.clone();
    body["stream"] = json!(stream);
    body.to_string()
}

/// The text of a streamed chat, checking the wire as it goes.
fn streamed_text(reply: &common::Reply) -> String {
    let events = reply.sse_data();
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        reply.body
    );
    let mut text = String::new();
    let mut finished = false;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}"));
        assert!(v.get("error").is_none(), "{e}");
        let choice = &v["choices"][0];
        text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        finished |= choice["finish_reason"].is_string();
    }
    assert!(finished, "no finish_reason in {}", reply.body);
    text
}

/// Sends one request of `kind` and checks its answer.
async fn one(addr: std::net::SocketAddr, kind: Kind, f: &Fixtures) {
    let path = "/v1/chat/completions";
    match kind {
        Kind::Good { which, stream } => {
            let reply = exchange(addr, &post(path, &with_stream(&f.good[which], stream))).await;
            assert_eq!(reply.status, 200, "{kind:?}: {}", reply.body);
            let text = if stream {
                streamed_text(&reply)
            } else {
                let v = reply.json();
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .expect("content")
                    .to_owned()
            };
            assert_eq!(text, f.answers[which], "{kind:?}");
        }
        Kind::Bad { which } => {
            let (body, status, code) = &f.bad[which];
            let reply = exchange(addr, &post(path, body)).await;
            assert_eq!(reply.status, *status, "{kind:?}: {}", reply.body);
            let v = reply.json();
            assert_eq!(v["error"]["code"], *code, "{kind:?}");
            if *code == "invalid_request" {
                let m = v["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    m.contains("the prompt has") && m.contains(&format!("holds {N_CTX}")),
                    "{m}"
                );
            }
        }
        Kind::HangUp => {
            let mut body = text_chat("Tell me a very long story.");
            body["max_tokens"] = json!(400);
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(&post(path, &with_stream(&body, true)))
                .await
                .expect("write");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).contains("data:") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed before the first event");
                seen.extend_from_slice(&buf[..n]);
            }
            assert!(seen.starts_with(b"HTTP/1.1 200"));
            // Dropping the socket here is the hang-up.
        }
    }
}

/// `n` requests over [`CLIENTS`] concurrent clients, cycling through [`KINDS`].
async fn round(addr: std::net::SocketAddr, f: &Arc<Fixtures>, n: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (next, f) = (next.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    one(addr, KINDS[i % KINDS.len()], &f).await;
                }
            })
        })
        .collect();
    for c in clients {
        c.await.expect("a client failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_mixed_requests_memory_stays_flat() {
    tokio::time::timeout(Duration::from_secs(120), soak())
        .await
        .expect("the soak took more than 120 s");
}

async fn soak() {
    let config = EngineConfig {
        model_path: testkit::fixture("gemma3").join("model.gguf"),
        mmproj_path: Some(testkit::fixture("gemma3").join("mmproj.gguf")),
        alias: None,
        n_ctx: N_CTX,
        n_slots: 4,
        kv_pool_cells: 0,
        kv_type: llm::KvType::F16,
        media_cache_bytes: 32 << 20,
        n_threads: None,
        image_min_tokens: None,
        image_max_tokens: None,
        device: llm::Device::Cpu,
        n_gpu_layers: None,
        encoder_device: llm::Device::Cpu,
    };
    let engine = tokio::task::spawn_blocking(move || Engine::load(config))
        .await
        .expect("load task")
        .expect("the tiny gemma3 fixture loads");
    let engine = Arc::new(engine);
    let state = AppState::new(ServerOptions::default());
    state.set_backend(engine.clone());
    let server = Running::start(state).await;

    // Each good chat answered alone first: the reference every concurrent answer must equal.
    let mut f = fixtures();
    for body in &f.good {
        let reply = exchange(
            server.addr,
            &post("/v1/chat/completions", &with_stream(body, false)),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let text = reply.json()["choices"][0]["message"]["content"]
            .as_str()
            .expect("content")
            .to_owned();
        f.answers.push(text);
    }
    let f = Arc::new(f);

    round(server.addr, &f, WARM_UP).await;
    let warm = rss_bytes();
    let start = Instant::now();
    round(server.addr, &f, REQUESTS).await;
    let took = start.elapsed();
    let end = rss_bytes();

    // Hung-up requests end at their next token: the engine must come back to idle.
    let idle_by = Instant::now() + Duration::from_secs(20);
    loop {
        let m = engine.metrics();
        if m.slots_busy == 0 && m.queue_depth == 0 {
            break;
        }
        assert!(
            Instant::now() < idle_by,
            "the engine did not go idle: {m:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let health = exchange(server.addr, &common::get("/health")).await;
    assert_eq!(health.status, 200);
    let m = engine.metrics();
    println!(
        "engine: {} requests finished, {} tokens generated, {} images encoded, {} media cache hits; answers {:?}",
        m.requests_finished, m.generated_tokens, m.images_encoded, m.media_cache_hits, f.answers
    );
    assert!(m.images_encoded >= 1 && m.generated_tokens > 0, "{m:?}");
    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "soak: {REQUESTS} requests over {CLIENTS} clients in {:.2} s ({:.1} requests/s); \
         RSS after warm-up {:.1} MB, at the end {:.1} MB (growth {:+.1} MB)",
        took.as_secs_f64(),
        REQUESTS as f64 / took.as_secs_f64(),
        mb(warm),
        mb(end),
        mb(end) - mb(warm)
    );
    assert!(
        end.saturating_sub(warm) < MAX_GROWTH,
        "resident memory grew from {:.1} MB to {:.1} MB",
        mb(warm),
        mb(end)
    );
    server.stop().await;
}
