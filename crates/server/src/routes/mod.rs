//! `router(state)`: the endpoints, API-key check, CORS, per-request log and counters, and the
//! SSE relay of engine events. Handlers only translate: wire JSON in (`openai.rs`), a
//! [`Request`] to the [`Backend`], its events back out.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api_error::ApiError;
use super::backend::{Backend, Event, ModelInfo, Request};
use super::media_input::MediaPolicy;
use super::metrics_text::{self, HttpCounters};
use super::openai::{self, ChatRequest, CompletionRequest, Finished, Kind, Meta};

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub allow_remote_media: bool,
    /// Print one line per request on stderr.
    pub log_requests: bool,
}

/// What every handler shares: the backend once loaded, options and counters.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    backend: OnceLock<Arc<dyn Backend>>,
    load_error: OnceLock<String>,
    options: ServerOptions,
    http: HttpCounters,
}

impl AppState {
    pub fn new(options: ServerOptions) -> Self {
        AppState(Arc::new(Shared {
            backend: OnceLock::new(),
            load_error: OnceLock::new(),
            options,
            http: HttpCounters::default(),
        }))
    }

    /// The model is ready: requests are served from now on.
    pub fn set_backend(&self, backend: Arc<dyn Backend>) {
        let _ = self.0.backend.set(backend);
    }

    pub fn set_load_error(&self, message: String) {
        let _ = self.0.load_error.set(message);
    }

    pub fn load_error(&self) -> Option<&str> {
        self.0.load_error.get().map(String::as_str)
    }

    fn backend(&self) -> Result<Arc<dyn Backend>, ApiError> {
        match (self.0.backend.get(), self.0.load_error.get()) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(e)) => Err(ApiError::LoadFailed(e.clone())),
            (None, None) => Err(ApiError::Unavailable),
        }
    }

    fn media_policy(&self) -> MediaPolicy {
        MediaPolicy {
            allow_remote: self.0.options.allow_remote_media,
            max_bytes: self.0.options.max_body_bytes,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.0.options.max_body_bytes;
    let protected = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/completions", post(completions))
        .route("/v1/models", get(models))
        .route("/models", get(models))
        .route("/v1/models/{*id}", get(model_by_id))
        .route("/props", get(props))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .route("/", get(index))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(middleware::from_fn(cors))
        .with_state(state)
}

/// Token counts a handler attaches to its response for the log line.
#[derive(Debug, Clone, Copy)]
struct Tokens {
    prompt: usize,
    generated: usize,
}

/// Marks a streamed response: its log line is written when the stream ends, not here.
#[derive(Debug, Clone, Copy)]
struct Streamed;

/// Counts every answer by route and status; logs the non-streamed ones.
async fn observe(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    state.0.http.record(&route, status);
    let quiet = matches!(route.as_str(), "/health" | "/metrics") && status < 400;
    if state.0.options.log_requests && !quiet && response.extensions().get::<Streamed>().is_none() {
        let tokens = response.extensions().get::<Tokens>().copied();
        log_line(&method, &path, status, tokens, start, "");
    }
    response
}

fn log_line(
    method: &Method,
    path: &str,
    status: u16,
    tokens: Option<Tokens>,
    start: Instant,
    note: &str,
) {
    let ms = start.elapsed().as_millis();
    match tokens {
        Some(t) => eprintln!(
            "{method} {path} {status} prompt={} gen={} {ms}ms{note}",
            t.prompt, t.generated
        ),
        None => eprintln!("{method} {path} {status} {ms}ms{note}"),
    }
}

/// Browsers on other origins (a chat UI on another port) may call the API.
async fn cors(req: axum::extract::Request, next: Next) -> Response {
    if req.method() == Method::OPTIONS {
        let allow_headers = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("authorization, content-type"));
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        return response;
    }
    let mut response = next.run(req).await;
    response.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

async fn require_key(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.0.options.api_key {
        let headers = req.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let given = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
        if !given.is_some_and(|g| same_key(g.as_bytes(), key.as_bytes())) {
            return ApiError::InvalidApiKey.into_response();
        }
    }
    next.run(req).await
}

/// Compares without stopping at the first differing byte (no timing hint about the key).
fn same_key(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        super::web::index_html(),
    )
}

async fn health(State(state): State<AppState>) -> Response {
    match state.backend() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            // llama.cpp's shape (numeric code), which health probes written for it expect.
            let body = json!({"error": {"code": 503, "message": e.to_string(),
                                        "type": "unavailable_error"}});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let backend = state.backend().ok();
    let engine = backend.as_ref().map(|b| b.metrics());
    let slots = backend.as_ref().map_or(0, |b| b.info().n_slots);
    let text = metrics_text::render(&state.0.http, engine, slots);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// One `/v1/models` entry. The input modalities are under `modalities` (and the same list
/// under `input_modalities`, the name some clients look for).
fn model_entry(info: &ModelInfo) -> Value {
    json!({
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": "mtmd-rs",
        "modalities": info.modalities(),
        "input_modalities": info.modalities(),
        "meta": {
            "n_ctx": info.n_ctx,
            "n_ctx_train": info.n_ctx_train,
            "n_slots": info.n_slots,
            "n_vocab": info.n_vocab,
            "n_params": info.n_params,
            "size": info.size_bytes,
            "vision": info.vision,
            "audio": info.audio,
        },
    })
}

async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let backend = state.backend()?;
    Ok(Json(json!({"object": "list", "data": [model_entry(backend.info())]})).into_response())
}

async fn model_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let backend = state.backend()?;
    let info = backend.info();
    if !openai::model_matches(&id, info) {
        return Err(ApiError::ModelNotFound(id));
    }
    Ok(Json(model_entry(info)).into_response())
}

async fn props(State(state): State<AppState>) -> Result<Response, ApiError> {
    let backend = state.backend()?;
    let info = backend.info();
    let defaults = llm::sampling::SamplingParams::default();
    Ok(Json(json!({
        "model": info.id,
        "model_alias": info.id,
        "model_path": info.model_path,
        "mmproj_path": info.mmproj_path,
        "n_ctx": info.n_ctx,
        "n_ctx_train": info.n_ctx_train,
        "total_slots": info.n_slots,
        "n_slots": info.n_slots,
        "n_vocab": info.n_vocab,
        "modalities": {"vision": info.vision, "audio": info.audio},
        "input_modalities": info.modalities(),
        "chat_template": info.chat_template,
        "default_generation_settings": {
            "n_ctx": info.n_ctx,
            "params": {
                "temperature": defaults.temperature,
                "top_k": defaults.top_k,
                "top_p": defaults.top_p,
                "min_p": defaults.min_p,
                "repeat_penalty": defaults.repeat_penalty,
                "max_tokens": null,
            },
        },
        "build_info": format!("mtmd-rs {}", env!("CARGO_PKG_VERSION")),
    }))
    .into_response())
}

/// The body; axum's rejections become our error shape (413 for the body limit).
fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::RequestTooLarge(state.0.options.max_body_bytes >> 20)
        } else {
            ApiError::InvalidRequest(format!(
                "could not read the request body: {}",
                r.body_text()
            ))
        }
    })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// Where a request came from, for its log line.
struct Origin {
    method: Method,
    path: String,
    start: Instant,
    log: bool,
}

impl Origin {
    fn new(state: &AppState, method: Method, uri: &axum::http::Uri) -> Self {
        Self {
            method,
            path: uri.path().to_owned(),
            start: Instant::now(),
            log: state.0.options.log_requests,
        }
    }
}

async fn chat(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let origin = Origin::new(&state, method, &uri);
    let backend = state.backend()?;
    let bytes = body_bytes(&state, body)?;
    let info = backend.info().clone();
    let policy = state.media_policy();
    // Parsing megabytes of base64 JSON, decoding images and maybe downloading them is
    // blocking work: keep it off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        let req: ChatRequest = parse_json(&bytes)?;
        req.common.check_model(&info)?;
        let flags = (req.common.stream(), req.common.include_usage());
        Ok::<_, ApiError>((req.into_request(&info, &policy)?, flags))
    });
    let (request, (stream, include_usage)) = parsed
        .await
        .map_err(|e| ApiError::Internal(format!("request decoding failed: {e}")))??;
    let meta = Meta::new(Kind::Chat, &backend.info().id);
    generate(backend, request, meta, stream, include_usage, origin).await
}

async fn completions(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let origin = Origin::new(&state, method, &uri);
    let backend = state.backend()?;
    let req: CompletionRequest = parse_json(&body_bytes(&state, body)?)?;
    req.common.check_model(backend.info())?;
    let (stream, include_usage) = (req.common.stream(), req.common.include_usage());
    let request = req.into_request()?;
    let meta = Meta::new(Kind::Completion, &backend.info().id);
    generate(backend, request, meta, stream, include_usage, origin).await
}

fn engine_vanished() -> ApiError {
    ApiError::Internal("the engine stopped before finishing the request".into())
}

fn finished(event: &Event) -> Option<Finished> {
    match event {
        Event::Done {
            usage,
            finish,
            prompt_time,
            generation_time,
        } => Some(Finished {
            usage: *usage,
            finish: *finish,
            prompt_ms: prompt_time.as_secs_f64() * 1000.0,
            predicted_ms: generation_time.as_secs_f64() * 1000.0,
        }),
        _ => None,
    }
}

/// Submits and relays. The receiver lives in this future (or in the SSE stream): a client
/// that goes away drops it, which is the engine's cancel signal.
async fn generate(
    backend: Arc<dyn Backend>,
    request: Request,
    meta: Meta,
    stream: bool,
    include_usage: bool,
    origin: Origin,
) -> Result<Response, ApiError> {
    let mut rx = backend.submit(request);
    if stream {
        // Wait for the first event so that a request the engine refuses (prompt too long for
        // the context, ...) still gets its HTTP status instead of a 200 stream.
        let first = rx.recv().await.ok_or_else(engine_vanished)?;
        if let Event::Error(e) = first {
            return Err(e.into());
        }
        return Ok(sse_response(rx, first, meta, include_usage, origin));
    }
    let mut text = String::new();
    loop {
        match rx.recv().await.ok_or_else(engine_vanished)? {
            Event::Started { .. } => {}
            Event::Text(piece) => text.push_str(&piece),
            Event::Error(e) => return Err(e.into()),
            done => {
                let f = finished(&done).ok_or_else(engine_vanished)?;
                let mut response = Json(meta.response(text, &f)).into_response();
                response.extensions_mut().insert(Tokens {
                    prompt: f.usage.prompt_tokens,
                    generated: f.usage.completion_tokens,
                });
                return Ok(response);
            }
        }
    }
}

/// State of one SSE relay; logs its line when dropped (finished or client gone).
struct Relay {
    rx: UnboundedReceiver<Event>,
    meta: Meta,
    include_usage: bool,
    pending: VecDeque<SseEvent>,
    ended: bool,
    origin: Origin,
    tokens: Option<Tokens>,
    note: &'static str,
}

impl Drop for Relay {
    fn drop(&mut self) {
        if self.origin.log {
            let note = if self.ended {
                self.note
            } else {
                " (client disconnected)"
            };
            let o = &self.origin;
            log_line(&o.method, &o.path, 200, self.tokens, o.start, note);
        }
    }
}

fn data(value: &Value) -> SseEvent {
    SseEvent::default().data(value.to_string())
}

impl Relay {
    /// Queues the SSE events one engine event turns into.
    fn push(&mut self, event: Event) {
        match event {
            Event::Started { prompt_tokens } => {
                self.tokens = Some(Tokens {
                    prompt: prompt_tokens,
                    generated: 0,
                });
            }
            Event::Text(piece) => {
                // Roughly a token per piece; `Done` brings the exact count (a client that
                // disconnects never gets one, and its log line keeps this estimate).
                if let Some(t) = &mut self.tokens {
                    t.generated += 1;
                }
                let chunk = self.meta.chunk(json!({"content": piece}), &piece, None);
                self.pending.push_back(data(&chunk));
            }
            Event::Error(e) => {
                self.pending.push_back(data(&ApiError::from(e).body()));
                self.ended = true;
                self.note = " (engine error)";
            }
            done @ Event::Done { .. } => {
                if let Some(f) = finished(&done) {
                    self.tokens = Some(Tokens {
                        prompt: f.usage.prompt_tokens,
                        generated: f.usage.completion_tokens,
                    });
                    let last = self.meta.chunk(json!({}), "", Some(f.finish));
                    self.pending.push_back(data(&last));
                    if self.include_usage {
                        self.pending.push_back(data(&self.meta.usage_chunk(&f)));
                    }
                }
                self.pending.push_back(SseEvent::default().data("[DONE]"));
                self.ended = true;
            }
        }
    }
}

fn sse_response(
    rx: UnboundedReceiver<Event>,
    first: Event,
    meta: Meta,
    include_usage: bool,
    origin: Origin,
) -> Response {
    let mut relay = Relay {
        rx,
        meta,
        include_usage,
        pending: VecDeque::new(),
        ended: false,
        origin,
        tokens: None,
        note: "",
    };
    if relay.meta.kind == Kind::Chat {
        let role = relay
            .meta
            .chunk(json!({"role": "assistant", "content": ""}), "", None);
        relay.pending.push_back(data(&role));
    }
    relay.push(first);
    let events = futures_util::stream::unfold(relay, |mut relay| async move {
        loop {
            if let Some(event) = relay.pending.pop_front() {
                return Some((Ok::<_, Infallible>(event), relay));
            }
            if relay.ended {
                return None;
            }
            match relay.rx.recv().await {
                Some(event) => relay.push(event),
                None => {
                    relay.push(Event::Error(super::backend::EngineError::Internal(
                        "the engine stopped before finishing the request".into(),
                    )));
                }
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    response.extensions_mut().insert(Streamed);
    response
}

#[cfg(test)]
mod tests;
