//! Router tests against a scripted fake [`Backend`]: wire shapes, SSE sequence, every error
//! status, the `Request` the engine sees, and cancellation by dropping the response.

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
        log_requests: false,
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

#[tokio::test]
async fn chat_completion_has_openai_shape() {
    let s = setup();
    let (status, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert!(body["created"].is_u64());
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["usage"]["total_tokens"], 9);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    assert_eq!(body["timings"]["predicted_ms"], 40.0);
    // llama.cpp's path without /v1 too.
    let (status, _) = post_json(&s.app, "/chat/completions", user("hi")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn length_finish_is_reported() {
    let events = vec![Event::Text("a".into()), done(3, 1, FinishReason::Length)];
    let s = setup_with(options(), false, events, false);
    let (_, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn chat_stream_sends_role_pieces_finish_usage_and_done() {
    let s = setup();
    let mut body = user("hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) =
        send(&s.app, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let events = sse_data(&text);
    assert_eq!(events.len(), 6, "{text}");
    assert_eq!(events[5], "[DONE]");
    let chunks: Vec<Value> = events[..5]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json chunk"))
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
    assert!(chunks[2]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_chunk() {
    let s = setup();
    let mut body = user("hi");
    body["stream"] = json!(true);
    let (_, _, text) = send(&s.app, post("/v1/chat/completions", body.to_string())).await;
    let events = sse_data(&text);
    assert_eq!(events.len(), 5, "{text}");
    assert!(!text.contains("\"usage\""));
}

#[tokio::test]
async fn engine_error_mid_stream_is_one_error_event() {
    let events = vec![
        Event::Started { prompt_tokens: 3 },
        Event::Text("a".into()),
        Event::Error(EngineError::Internal("kv exploded".into())),
    ];
    let s = setup_with(options(), false, events, false);
    let mut body = user("hi");
    body["stream"] = json!(true);
    let (status, _, text) = send(&s.app, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "internal_error");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn engine_errors_map_to_400_and_500() {
    for (err, want, stream) in [
        (
            EngineError::InvalidRequest("prompt too long".into()),
            400,
            false,
        ),
        (
            EngineError::InvalidRequest("prompt too long".into()),
            400,
            true,
        ),
        (EngineError::Internal("boom".into()), 500, false),
        (EngineError::Internal("boom".into()), 500, true),
    ] {
        let s = setup_with(options(), false, vec![Event::Error(err)], false);
        let mut body = user("hi");
        body["stream"] = json!(stream);
        let (status, body) = post_json(&s.app, "/v1/chat/completions", body).await;
        error_of(status, &body, want);
    }
}

#[tokio::test]
async fn completions_plain_and_streamed() {
    let s = setup();
    let (status, body) = post_json(
        &s.app,
        "/v1/completions",
        json!({"prompt": "Once", "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 2);
    match &s.fake.seen.lock().expect("lock")[0] {
        Request {
            prompt: Prompt::Text(p),
            max_tokens,
            ..
        } => {
            assert_eq!(p, "Once");
            assert_eq!(*max_tokens, Some(4));
        }
        other => panic!("unexpected request {other:?}"),
    }
    let req = post(
        "/completions",
        json!({"prompt": ["Once"], "stream": true}).to_string(),
    );
    let (status, _, text) = send(&s.app, req).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&events[0]).expect("json");
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "Hel");
}

#[tokio::test]
async fn models_list_the_modalities() {
    let s = setup();
    let (status, _, text) = send(&s.app, get("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["object"], "list");
    let entry = &body["data"][0];
    assert_eq!(entry["id"], "tiny");
    assert_eq!(entry["object"], "model");
    assert_eq!(entry["owned_by"], "mtmd-rs");
    assert_eq!(entry["modalities"], json!(["text", "image"]));
    assert_eq!(entry["input_modalities"], json!(["text", "image"]));
    let (status, _, _) = send(&s.app, get("/v1/models/tiny")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&s.app, get("/v1/models/other")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text_only = setup_with(options(), false, hello_events(), false);
    let (_, _, text) = send(&text_only.app, get("/v1/models")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["data"][0]["modalities"], json!(["text"]));
}

#[tokio::test]
async fn health_is_503_while_loading_then_200() {
    let state = AppState::new(options());
    let app = router(state.clone());
    let (status, _, text) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    );
    let (status, body) = post_json(&app, "/v1/chat/completions", user("hi")).await;
    error_of(status, &body, 503);
    let (status, _, _) = send(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK, "metrics answer while loading");
    let fake = Arc::new(Fake {
        info: info(false),
        events: hello_events(),
        hold: false,
        seen: Mutex::new(Vec::new()),
        senders: Mutex::new(Vec::new()),
    });
    state.set_backend(fake);
    let (status, _, text) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json"),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn props_describe_the_model() {
    let s = setup();
    let (status, _, text) = send(&s.app, get("/props")).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["n_ctx"], 512);
    assert_eq!(body["total_slots"], 2);
    assert_eq!(body["modalities"], json!({"vision": true, "audio": false}));
    assert_eq!(body["chat_template"], "{{ messages }}");
    assert!(
        body["build_info"]
            .as_str()
            .expect("build")
            .starts_with("mtmd-rs")
    );
}

#[tokio::test]
async fn metrics_expose_http_and_engine_counters() {
    let s = setup();
    post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    post_json(&s.app, "/v1/chat/completions", json!({"bad": 1})).await;
    let (status, headers, text) = send(&s.app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert!(
        text.contains("mtmd_http_requests_total{path=\"/v1/chat/completions\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mtmd_http_requests_total{path=\"/v1/chat/completions\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE mtmd_images_encoded_total counter"));
    assert!(text.contains("mtmd_images_encoded_total 2\n"));
    assert!(text.contains("mtmd_queue_depth 1\n"));
    assert!(text.contains("mtmd_slots_total 2\n"));
}

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let s = setup();
    let (status, _, text) = send(&s.app, post("/v1/chat/completions", "{\"messages\": [")).await;
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(error_of(status, &body, 400).0, "invalid_json");
    for bad in [
        json!({"model": "tiny"}),
        json!({"messages": "hi"}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
        json!({"messages": []}),
    ] {
        let (status, body) = post_json(&s.app, "/v1/chat/completions", bad.clone()).await;
        error_of(status, &body, 400);
    }
    // No content-type header (curl -d) is still read as JSON.
    let req = HttpRequest::post("/v1/chat/completions")
        .body(Body::from(user("hi").to_string()))
        .expect("request");
    let (status, _, _) = send(&s.app, req).await;
    assert_eq!(status, StatusCode::OK);
}

fn image_message(url: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]}]})
}

#[tokio::test]
async fn bad_images_are_400_naming_the_part() {
    let s = setup();
    let corrupt = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nnot really");
    for url in [
        "data:image/png;base64,%%%not-base64%%%".to_owned(),
        format!("data:image/png;base64,{corrupt}"),
        "data:audio/wav;base64,AAAA".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, body) = post_json(&s.app, "/v1/chat/completions", image_message(&url)).await;
        let (_, message) = error_of(status, &body, 400);
        assert!(message.starts_with("messages[0].content[1]: "), "{message}");
    }
    let (status, body) = post_json(
        &s.app,
        "/v1/chat/completions",
        image_message("http://example.com/a.png"),
    )
    .await;
    let (_, message) = error_of(status, &body, 400);
    assert!(message.contains("--allow-remote-media"), "{message}");
    assert!(
        s.fake.seen.lock().expect("lock").is_empty(),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn image_without_vision_names_mmproj() {
    let s = setup_with(options(), false, hello_events(), false);
    let url = format!("data:image/png;base64,{}", png_b64());
    let (status, body) = post_json(&s.app, "/v1/chat/completions", image_message(&url)).await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "no_vision");
    assert!(message.contains("--mmproj"), "{message}");
}

#[tokio::test]
async fn audio_without_an_audio_encoder_is_400_naming_the_part() {
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}]});
    // A vision mmproj, then no mmproj at all.
    for (vision, want) in [
        (true, "its mmproj has a vision encoder, not an audio one"),
        (false, "--mmproj"),
    ] {
        let s = setup_with(options(), vision, hello_events(), false);
        let (status, reply) = post_json(&s.app, "/v1/chat/completions", body.clone()).await;
        let (code, message) = error_of(status, &reply, 400);
        assert_eq!(code, "no_audio");
        assert!(
            message.starts_with("messages[0].content[1]: this model takes no audio input"),
            "{message}"
        );
        assert!(message.contains(want), "{message}");
        assert!(s.fake.seen.lock().expect("lock").is_empty());
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let opts = ServerOptions {
        max_body_bytes: 4096,
        ..options()
    };
    let s = setup_with(opts, true, hello_events(), false);
    let big = user(&"x".repeat(10_000));
    let (status, body) = post_json(&s.app, "/v1/chat/completions", big).await;
    assert_eq!(error_of(status, &body, 413).0, "request_too_large");
    // Without a Content-Length (chunked upload) the limit holds too.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1000]))),
    );
    let req = HttpRequest::post("/v1/completions")
        .body(Body::from_stream(chunks))
        .expect("request");
    let (status, _, text) = send(&s.app, req).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    error_of(status, &body, 413);
}

#[tokio::test]
async fn unknown_model_is_404_and_file_names_are_accepted() {
    let s = setup();
    for (model, want) in [
        ("gpt-4o", 404),
        ("tiny", 200),
        ("tiny-model.gguf", 200),
        ("tiny-model", 200),
        ("", 200),
    ] {
        let mut body = user("hi");
        body["model"] = json!(model);
        let (status, body) = post_json(&s.app, "/v1/chat/completions", body).await;
        assert_eq!(status.as_u16(), want, "{model}: {body}");
        if want == 404 {
            assert_eq!(error_of(status, &body, 404).0, "model_not_found");
        }
    }
    let (status, body) = post_json(
        &s.app,
        "/v1/completions",
        json!({"prompt": "x", "model": "nope"}),
    )
    .await;
    error_of(status, &body, 404);
}

#[tokio::test]
async fn api_key_is_required_where_it_should_be() {
    let opts = ServerOptions {
        api_key: Some("sekret".into()),
        ..options()
    };
    let s = setup_with(opts, true, hello_events(), false);
    let (status, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    assert_eq!(error_of(status, &body, 401).0, "invalid_api_key");
    let wrong = HttpRequest::get("/v1/models")
        .header("authorization", "Bearer nope")
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = send(&s.app, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&s.app, get("/props")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let right = HttpRequest::get("/v1/models")
        .header("authorization", "Bearer sekret")
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = send(&s.app, right).await;
    assert_eq!(status, StatusCode::OK);
    for open in ["/health", "/metrics", "/"] {
        let (status, _, _) = send(&s.app, get(open)).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn cors_preflight_and_header() {
    let s = setup_with(
        ServerOptions {
            api_key: Some("k".into()),
            ..options()
        },
        true,
        hello_events(),
        false,
    );
    let preflight = HttpRequest::options("/v1/chat/completions")
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .body(Body::empty())
        .expect("request");
    let (status, headers, _) = send(&s.app, preflight).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("m")
            .contains("POST")
    );
    let (_, headers, _) = send(&s.app, get("/health")).await;
    assert_eq!(headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let s = setup();
    let (status, _, text) = send(&s.app, get("/v2/nothing")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(error_of(status, &body, 404).0, "not_found");
}

#[tokio::test]
async fn index_serves_the_page() {
    let s = setup();
    let (status, headers, text) = send(&s.app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(text.contains("<html") || text.contains("<!doctype") || text.contains("<!DOCTYPE"));
}

#[tokio::test]
async fn the_engine_sees_mapped_sampling_and_decoded_images() {
    let s = setup();
    let url = format!("data:image/png;base64,{}", png_b64());
    let body = json!({
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                {"type": "text", "text": "and"},
                {"type": "image_url", "image_url": {"url": png_b64()}},
            ]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "again"},
                {"type": "image_url", "image_url": {"url": url}},
            ]},
        ],
        "temperature": 0.0, "top_p": 0.9, "top_k": 5, "min_p": 0.0, "seed": 7,
        "max_tokens": 16, "stop": ["</s>", "END"],
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "repeat_penalty": 1.3,
        "logit_bias": {}, "user": "ignored",
    });
    let (status, reply) = post_json(&s.app, "/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let seen = s.fake.seen.lock().expect("lock");
    let req = &seen[0];
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(
        (req.sampling.top_p, req.sampling.top_k, req.sampling.min_p),
        (0.9, 5, 0.0)
    );
    assert_eq!(req.sampling.seed, Some(7));
    assert_eq!(req.sampling.presence_penalty, 0.1);
    assert_eq!(req.sampling.frequency_penalty, 0.2);
    assert_eq!(req.sampling.repeat_penalty, 1.3);
    assert_eq!(req.max_tokens, Some(16));
    assert_eq!(req.stop, vec!["</s>".to_owned(), "END".to_owned()]);
    let Prompt::Chat { messages, media } = &req.prompt else {
        panic!("chat prompt expected");
    };
    assert_eq!(messages.len(), 4);
    assert_eq!(media.len(), 3);
    let images: Vec<&mtmd::Bitmap> = media
        .iter()
        .map(|m| match m {
            MediaItem::Image(b) => b,
            MediaItem::Audio(_) => panic!("image expected"),
        })
        .collect();
    for img in &images {
        assert_eq!(img.id(), format!("{:016x}", img.content_hash()));
        assert_eq!(img.id().len(), 16);
    }
    assert_eq!(images[0].id(), images[2].id(), "same bytes, same id");
    let MessageContent::Parts(parts) = &messages[1].content else {
        panic!("parts expected");
    };
    assert_eq!(parts[0], ContentPart::image());
    assert_eq!(parts[1], ContentPart::text("and"));
    assert_eq!(parts[2], ContentPart::image());
    assert_eq!(messages[0].content, MessageContent::Text("be brief".into()));
}

/// Dropping the response (a client that hangs up) drops the receiver: the engine's cancel.
#[tokio::test]
async fn dropping_the_response_cancels_the_request() {
    let events = vec![Event::Started { prompt_tokens: 3 }, Event::Text("a".into())];
    for stream in [true, false] {
        let s = setup_with(options(), false, events.clone(), true);
        let mut body = user("hi");
        body["stream"] = json!(stream);
        if stream {
            let call = s
                .app
                .clone()
                .oneshot(post("/v1/chat/completions", body.to_string()));
            let response = within("response", call).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            let first = within("first frame", body.frame())
                .await
                .expect("a frame")
                .expect("ok");
            assert!(first.into_data().is_ok());
            let tx = s.fake.senders.lock().expect("lock")[0].clone();
            assert!(!tx.is_closed(), "still streaming");
            drop(body);
            assert!(tx.is_closed(), "dropping the stream must drop the receiver");
        } else {
            let app = s.app.clone();
            let call = tokio::spawn(async move {
                app.oneshot(post("/v1/chat/completions", body.to_string()))
                    .await
            });
            // Wait until the request reached the engine, then abandon it.
            for _ in 0..200 {
                if !s.fake.senders.lock().expect("lock").is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let tx = s.fake.senders.lock().expect("lock")[0].clone();
            assert!(!tx.is_closed());
            call.abort();
            let _ = within("aborted call", call).await;
            assert!(
                tx.is_closed(),
                "an abandoned request must drop its receiver"
            );
        }
    }
}

// Audio: `input_audio` parts and `/v1/audio/transcriptions`.

fn audio_fixture(name: &str) -> Vec<u8> {
    std::fs::read(testkit::fixture("qwen2audio").join(name)).expect("fixture")
}

fn wav_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(audio_fixture("short_0p1s_16k.wav"))
}

fn audio_setup(options: ServerOptions, events: Vec<Event>) -> Setup {
    setup_info(options, info_with(false, true), events, false)
}

fn audio_message(data: &str, format: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": format}},
        {"type": "text", "text": "what is this?"},
    ]}]})
}

#[tokio::test]
async fn audio_models_list_the_audio_modality() {
    let s = audio_setup(options(), hello_events());
    let (_, _, text) = send(&s.app, get("/v1/models")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["data"][0]["modalities"], json!(["text", "audio"]));
    assert_eq!(body["data"][0]["meta"]["audio"], true);
    let (_, _, text) = send(&s.app, get("/props")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["modalities"], json!({"vision": false, "audio": true}));
    assert_eq!(body["input_modalities"], json!(["text", "audio"]));
}

#[tokio::test]
async fn input_audio_reaches_the_engine_as_a_clip_in_prompt_order() {
    let s = audio_setup(options(), hello_events());
    let wav = wav_b64();
    let body = json!({"messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "first"},
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        ]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": wav, "format": "WAV"}},
            {"type": "input_audio", "input_audio": {
                "data": base64::engine::general_purpose::STANDARD
                    .encode(audio_fixture("speech_a_16k_mono.flac")),
                "format": "flac"}},
        ]},
    ]});
    let (status, reply) = post_json(&s.app, "/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let seen = s.fake.seen.lock().expect("lock");
    let Prompt::Chat { messages, media } = &seen[0].prompt else {
        panic!("chat prompt expected");
    };
    assert_eq!(media.len(), 3);
    let clips: Vec<&mtmd::Audio> = media
        .iter()
        .map(|m| match m {
            MediaItem::Audio(a) => a,
            MediaItem::Image(_) => panic!("audio expected"),
        })
        .collect();
    assert_eq!(clips[0].id(), format!("{:016x}", clips[0].content_hash()));
    assert_eq!(clips[0].id(), clips[1].id(), "same bytes, same id");
    assert_ne!(clips[1].id(), clips[2].id());
    assert_eq!(clips[0].pcm().sample_rate, 16000);
    let MessageContent::Parts(parts) = &messages[0].content else {
        panic!("parts expected");
    };
    // The base64 is gone from the messages: a bare placeholder stays.
    assert_eq!(parts[1], ContentPart::input_audio("", ""));
}

#[tokio::test]
async fn bad_audio_parts_are_400_naming_the_part() {
    let s = audio_setup(options(), hello_events());
    for (data, format, code) in [
        ("@@not base64@@".to_owned(), "wav", "invalid_audio"),
        (
            base64::engine::general_purpose::STANDARD.encode(b"not audio at all"),
            "wav",
            "invalid_audio",
        ),
        (wav_b64(), "webm", "invalid_audio"),
    ] {
        let (status, body) =
            post_json(&s.app, "/v1/chat/completions", audio_message(&data, format)).await;
        let (got, message) = error_of(status, &body, 400);
        assert_eq!(got, code, "{message}");
        assert!(message.starts_with("messages[0].content[0]: "), "{message}");
    }
    // An image for an audio-only mmproj.
    let (status, body) = post_json(
        &s.app,
        "/v1/chat/completions",
        image_message(&format!("data:image/png;base64,{}", png_b64())),
    )
    .await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "no_vision");
    assert!(
        message.starts_with("messages[0].content[1]: this model takes no image input")
            && message.contains("audio encoder, not a vision one"),
        "{message}"
    );
    assert!(s.fake.seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn audio_longer_than_the_limit_is_400_naming_both_lengths() {
    let opts = ServerOptions {
        max_audio_seconds: 1.0,
        ..options()
    };
    let s = audio_setup(opts, hello_events());
    let long =
        base64::engine::general_purpose::STANDARD.encode(audio_fixture("speech_a_16k_mono.wav"));
    let (status, body) =
        post_json(&s.app, "/v1/chat/completions", audio_message(&long, "wav")).await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "audio_too_long");
    assert!(
        message.starts_with("messages[0].content[0]: the audio is ")
            && message.contains("longer than the limit of 1.00 s"),
        "{message}"
    );
    // The 0.1 s clip is within the limit.
    let (status, _) = post_json(
        &s.app,
        "/v1/chat/completions",
        audio_message(&wav_b64(), "wav"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

const BOUNDARY: &str = "----mtmdTestBoundary7MA4YWxk";

/// A multipart/form-data body: `(name, Some(file name) for a file, bytes)` per field.
fn multipart_body(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: audio/wav\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn transcription(fields: &[(&str, Option<&str>, &[u8])]) -> HttpRequest<Body> {
    HttpRequest::post("/v1/audio/transcriptions")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart_body(fields)))
        .expect("request")
}

#[tokio::test]
async fn transcriptions_answer_json_by_default_and_text_on_request() {
    let s = audio_setup(options(), hello_events());
    let wav = audio_fixture("short_0p1s_16k.wav");
    let (status, headers, text) = send(
        &s.app,
        transcription(&[
            ("file", Some("clip.wav"), &wav),
            ("model", None, b"tiny"),
            ("language", None, b"en"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["text"], "Hello");
    assert_eq!(
        body["usage"],
        json!({"type": "tokens", "input_tokens": 7, "output_tokens": 2, "total_tokens": 9})
    );
    {
        let seen = s.fake.seen.lock().expect("lock");
        let req = &seen[0];
        assert_eq!(req.sampling.temperature, 0.0, "greedy by default");
        assert_eq!(req.max_tokens, None);
        let Prompt::Chat { messages, media } = &req.prompt else {
            panic!("chat prompt expected");
        };
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].role, "user");
        assert_eq!(
            messages[0].content,
            MessageContent::Parts(vec![
                ContentPart::input_audio("", ""),
                ContentPart::text("Transcribe this audio."),
            ])
        );
        assert!(matches!(media.as_slice(), [MediaItem::Audio(a)] if a.pcm().sample_rate == 16000));
    }
    let (status, headers, text) = send(
        &s.app,
        transcription(&[
            ("response_format", None, b"text"),
            ("prompt", None, b"Write down the words."),
            ("temperature", None, b"0.7"),
            ("max_tokens", None, b"12"),
            ("file", Some("clip.wav"), &wav),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert_eq!(text, "Hello");
    {
        let seen = s.fake.seen.lock().expect("lock");
        assert_eq!(seen[1].sampling.temperature, 0.7);
        assert_eq!(seen[1].max_tokens, Some(12));
        let Prompt::Chat { messages, .. } = &seen[1].prompt else {
            panic!("chat prompt expected");
        };
        let MessageContent::Parts(parts) = &messages[0].content else {
            panic!("parts expected");
        };
        assert_eq!(parts[1], ContentPart::text("Write down the words."));
    }
    // Without /v1 too.
    let mut req = transcription(&[("file", Some("clip.wav"), &wav)]);
    *req.uri_mut() = "/audio/transcriptions".parse().expect("uri");
    let (status, _, _) = send(&s.app, req).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn transcription_stream_sends_deltas_then_done() {
    let s = audio_setup(options(), hello_events());
    let wav = audio_fixture("short_0p1s_16k.wav");
    let (status, headers, text) = send(
        &s.app,
        transcription(&[("file", Some("a.wav"), &wav), ("stream", None, b"true")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|e| serde_json::from_str(e).expect("json event"))
        .collect();
    assert_eq!(
        events,
        vec![
            json!({"type": "transcript.text.delta", "delta": "Hel"}),
            json!({"type": "transcript.text.delta", "delta": "lo"}),
            json!({"type": "transcript.text.done", "text": "Hello", "usage":
                {"type": "tokens", "input_tokens": 7, "output_tokens": 2, "total_tokens": 9}}),
        ],
        "{text}"
    );
    // An engine error mid-stream is one error event, as for chat.
    let events = vec![
        Event::Started { prompt_tokens: 3 },
        Event::Text("a".into()),
        Event::Error(EngineError::Internal("kv exploded".into())),
    ];
    let s = audio_setup(options(), events);
    let (_, _, text) = send(
        &s.app,
        transcription(&[("file", Some("a.wav"), &wav), ("stream", None, b"true")]),
    )
    .await;
    let last: Value = serde_json::from_str(sse_data(&text).last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "internal_error");
}

#[tokio::test]
async fn transcription_errors_follow_the_table() {
    let wav = audio_fixture("short_0p1s_16k.wav");
    let s = audio_setup(options(), hello_events());
    let cases: Vec<(HttpRequest<Body>, u16, &str)> = vec![
        (
            transcription(&[("model", None, b"tiny")]),
            400,
            "invalid_request",
        ),
        (
            transcription(&[("file", Some("a.wav"), b"definitely not audio")]),
            400,
            "invalid_audio",
        ),
        (
            transcription(&[
                ("file", Some("a.wav"), &wav),
                ("response_format", None, b"srt"),
            ]),
            400,
            "invalid_request",
        ),
        (
            transcription(&[("file", Some("a.wav"), &wav), ("temperature", None, b"hot")]),
            400,
            "invalid_request",
        ),
        (
            transcription(&[("file", Some("a.wav"), &wav), ("model", None, b"whisper-1")]),
            404,
            "model_not_found",
        ),
        (
            post("/v1/audio/transcriptions", json!({"file": "x"}).to_string()),
            400,
            "invalid_request",
        ),
    ];
    for (req, want, code) in cases {
        let (status, _, text) = send(&s.app, req).await;
        let body: Value = serde_json::from_str(&text).expect("json error");
        let (got, message) = error_of(status, &body, want);
        assert_eq!(got, code, "{message}");
    }
    let (status, _, text) = send(
        &s.app,
        transcription(&[("file", Some("a.wav"), b"not audio")]),
    )
    .await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert!(
        error_of(status, &body, 400).1.starts_with("file: "),
        "{body}"
    );
    assert!(s.fake.seen.lock().expect("lock").is_empty());

    // A model without an audio encoder.
    for vision in [true, false] {
        let s = setup_with(options(), vision, hello_events(), false);
        let (status, _, text) = send(&s.app, transcription(&[("file", Some("a.wav"), &wav)])).await;
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(error_of(status, &body, 400).0, "no_audio");
    }

    // The body limit holds for uploads, and so does the audio length limit.
    let small = ServerOptions {
        max_body_bytes: 4096,
        ..options()
    };
    let s = audio_setup(small, hello_events());
    let big = audio_fixture("speech_a_16k_mono.wav");
    let (status, _, text) = send(&s.app, transcription(&[("file", Some("a.wav"), &big)])).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(error_of(status, &body, 413).0, "request_too_large");
    let short = ServerOptions {
        max_audio_seconds: 1.0,
        ..options()
    };
    let s = audio_setup(short, hello_events());
    let (status, _, text) = send(&s.app, transcription(&[("file", Some("a.wav"), &big)])).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "audio_too_long");
    assert!(message.contains("limit of 1.00 s"), "{message}");

    // The key guards the endpoint.
    let keyed = ServerOptions {
        api_key: Some("k".into()),
        ..options()
    };
    let s = audio_setup(keyed, hello_events());
    let (status, _, _) = send(&s.app, transcription(&[("file", Some("a.wav"), &wav)])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
