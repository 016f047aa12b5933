//! Router tests against a scripted fake [`Backend`]: wire shapes, SSE sequence, every error
//! status, the `Request` the engine sees, and cancellation by dropping the response.

mod audio;
mod chat;
mod errors;
mod info;
mod limits;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request as HttpRequest, StatusCode};
use base64::Engine as _;
use http_body_util::BodyExt;
use llm::chat::{ContentPart, MessageContent};
use serde_json::{Value, json};
use tokio::sync::mpsc::{self, UnboundedSender};
use tower::ServiceExt;

use super::{AppState, ServerOptions, router};
use crate::backend::{
    Backend, EngineError, EngineMetrics, Event, FinishReason, MediaItem, ModelInfo, Prompt,
    Request, Usage,
};

/// Replies to every request with `events`; keeps each sender when `hold` so a test can watch
/// for cancellation.
struct Fake {
    info: ModelInfo,
    events: Vec<Event>,
    hold: bool,
    seen: Mutex<Vec<Request>>,
    senders: Mutex<Vec<UnboundedSender<Event>>>,
}

impl Backend for Fake {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn submit(&self, request: Request) -> mpsc::UnboundedReceiver<Event> {
        self.seen.lock().expect("lock").push(request);
        let (tx, rx) = mpsc::unbounded_channel();
        for e in &self.events {
            let _ = tx.send(e.clone());
        }
        if self.hold {
            self.senders.lock().expect("lock").push(tx);
        }
        rx
    }

    fn metrics(&self) -> EngineMetrics {
        EngineMetrics {
            images_encoded: 2,
            queue_depth: 1,
            ..Default::default()
        }
    }
}

fn info(vision: bool) -> ModelInfo {
    info_with(vision, false)
}

/// A model whose mmproj (if any) takes images (`vision`) or audio (`audio`).
fn info_with(vision: bool, audio: bool) -> ModelInfo {
    ModelInfo {
        id: "tiny".into(),
        created: 1_700_000_000,
        n_ctx: 512,
        n_ctx_train: 2048,
        n_slots: 2,
        kv_pool_cells: 1024,
        n_vocab: 100,
        n_params: 1000,
        size_bytes: 4000,
        device: "cpu".into(),
        vision,
        audio,
        chat_template: Some("{{ messages }}".into()),
        model_path: "/models/tiny-model.gguf".into(),
        mmproj_path: (vision || audio).then(|| "/models/mmproj.gguf".into()),
    }
}

fn done(prompt: usize, completion: usize, finish: FinishReason) -> Event {
    Event::Done {
        usage: Usage {
            prompt_tokens: prompt,
            cached_tokens: 1,
            completion_tokens: completion,
        },
        finish,
        prompt_time: Duration::from_millis(20),
        generation_time: Duration::from_millis(40),
    }
}

fn hello_events() -> Vec<Event> {
    vec![
        Event::Started { prompt_tokens: 7 },
        Event::Text("Hel".into()),
        Event::Text("lo".into()),
        done(7, 2, FinishReason::Stop),
    ]
}

fn options() -> ServerOptions {
    ServerOptions {
        api_key: None,
        max_body_bytes: 1 << 20,
        allow_remote_media: false,
        max_audio_seconds: 600.0,
        ..ServerOptions::default()
    }
}

struct Setup {
    fake: Arc<Fake>,
    app: axum::Router,
}

fn setup_with(options: ServerOptions, vision: bool, events: Vec<Event>, hold: bool) -> Setup {
    setup_info(options, info(vision), events, hold)
}

fn setup_info(options: ServerOptions, info: ModelInfo, events: Vec<Event>, hold: bool) -> Setup {
    let fake = Arc::new(Fake {
        info,
        events,
        hold,
        seen: Mutex::new(Vec::new()),
        senders: Mutex::new(Vec::new()),
    });
    let state = AppState::new(options);
    state.set_backend(fake.clone());
    Setup {
        fake,
        app: router(state),
    }
}

fn setup() -> Setup {
    setup_with(options(), true, hello_events(), false)
}

/// Longest wait for a response, a body or a frame: a relay that never ends fails the test
/// instead of hanging CI.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `future`, or a panic naming `what` after [`TIMEOUT`].
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {TIMEOUT:?}"))
}

async fn send(app: &axum::Router, req: HttpRequest<Body>) -> (StatusCode, HeaderMap, String) {
    let response = within("response", app.clone().oneshot(req))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = within("body", response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn post(path: &str, body: impl Into<Body>) -> HttpRequest<Body> {
    HttpRequest::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request")
}

fn get(path: &str) -> HttpRequest<Body> {
    HttpRequest::get(path).body(Body::empty()).expect("request")
}

async fn post_json(app: &axum::Router, path: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, text) = send(app, post(path, body.to_string())).await;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Asserts OpenAI's error shape and returns (code, message).
fn error_of(status: StatusCode, body: &Value, want: u16) -> (String, String) {
    assert_eq!(status.as_u16(), want, "{body}");
    let err = &body["error"];
    assert!(err["type"].is_string(), "{body}");
    let code = err["code"].as_str().expect("code").to_owned();
    let message = err["message"].as_str().expect("message").to_owned();
    (code, message)
}

fn sse_data(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim_start().to_owned())
        .collect()
}

fn png_b64() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gemma3/tiny.png"
    );
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).expect("fixture"))
}

fn user(text: &str) -> Value {
    json!({"messages": [{"role": "user", "content": text}]})
}

fn image_message(url: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]})
}
