//! `/v1/chat/completions` and `/v1/completions`: the body parsed into a [`Request`],
//! submitted to the backend, and its events relayed as one JSON response or (`stream`) as
//! SSE (`sse.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;

use super::AppState;
use super::middleware::Tokens;
use super::sse::{CompletionWire, sse_response};
use super::state::Admission;
use crate::api_error::{ApiError, seconds};
use crate::backend::{Backend, Event, Request};
use crate::openai::{ChatRequest, CompletionRequest, Finished, Kind, Meta};

/// The body; axum's rejections become our error shape (413 for the body limit).
fn body_bytes(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::RequestTooLarge(state.options().max_body_bytes >> 20)
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

/// Where a request came from (for its log line) and what bounds it: its `--timeout`
/// deadline and, once admitted, its place among the `--parallel` + `--max-queue` requests.
pub(super) struct Origin {
    pub method: Method,
    pub path: String,
    pub start: Instant,
    pub log: bool,
    deadline: Option<(tokio::time::Instant, Duration)>,
    admission: Option<Admission>,
}

impl Origin {
    pub(super) fn new(state: &AppState, method: Method, uri: &axum::http::Uri) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            method,
            path: uri.path().to_owned(),
            start: Instant::now(),
            log: state.options().log_requests,
            deadline: state.options().request_timeout.map(|t| (now + t, t)),
            admission: None,
        }
    }

    /// Takes a place in the bounded queue (503 `queue_full` when there is none); it is held
    /// until this origin (or the stream that took it) is dropped.
    pub(super) fn admit(
        &mut self,
        state: &AppState,
        backend: &dyn Backend,
    ) -> Result<(), ApiError> {
        self.admission = Some(state.admit(backend.info().n_slots)?);
        Ok(())
    }

    /// The next engine event, or the `--timeout` error once the deadline has passed (the
    /// caller then drops `rx`, which stops the generation).
    pub(super) async fn next_event(
        &self,
        rx: &mut UnboundedReceiver<Event>,
    ) -> Result<Event, ApiError> {
        let event = match self.deadline {
            Some((at, _)) => tokio::time::timeout_at(at, rx.recv())
                .await
                .map_err(|_| self.timeout_error())?,
            None => rx.recv().await,
        };
        event.ok_or_else(engine_vanished)
    }

    pub(super) fn timeout_error(&self) -> ApiError {
        let limit = self.deadline.map(|(_, t)| t).unwrap_or_default();
        ApiError::Timeout(seconds(limit))
    }

    pub(super) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline.map(|(at, _)| at)
    }
}

/// The header that reports a `max_tokens` larger than the room the prompt leaves in the
/// context: its value is the bound the generation got instead.
pub(super) const MAX_TOKENS_CLAMPED: &str = "x-max-tokens-clamped";

/// The bound a request asking for `asked` tokens got, when it is smaller than `asked`.
fn clamped(asked: Option<usize>, n_ctx: usize, prompt_tokens: usize) -> Option<usize> {
    let room = n_ctx.saturating_sub(prompt_tokens);
    asked.filter(|&m| m > room).map(|_| room)
}

fn report_clamp(response: &mut Response, clamp: Option<usize>) {
    if let Some(room) = clamp {
        response
            .headers_mut()
            .insert(MAX_TOKENS_CLAMPED, HeaderValue::from(room));
    }
}

pub(super) async fn chat(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut origin = Origin::new(&state, method, &uri);
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
    origin.admit(&state, &*backend)?;
    let meta = Meta::new(Kind::Chat, &backend.info().id);
    generate(backend, request, meta, stream, include_usage, origin).await
}

pub(super) async fn completions(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut origin = Origin::new(&state, method, &uri);
    let backend = state.backend()?;
    let req: CompletionRequest = parse_json(&body_bytes(&state, body)?)?;
    req.common.check_model(backend.info())?;
    let (stream, include_usage) = (req.common.stream(), req.common.include_usage());
    let request = req.into_request()?;
    origin.admit(&state, &*backend)?;
    let meta = Meta::new(Kind::Completion, &backend.info().id);
    generate(backend, request, meta, stream, include_usage, origin).await
}

/// The backend dropped a request's channel before its `Done` or `Error`.
pub(super) const ENGINE_VANISHED: &str = "the engine stopped before finishing the request";

pub(super) fn engine_vanished() -> ApiError {
    ApiError::Internal(ENGINE_VANISHED.into())
}

pub(super) fn finished(event: &Event) -> Option<Finished> {
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
/// that goes away drops it, which is the engine's cancel signal; so does the deadline.
async fn generate(
    backend: Arc<dyn Backend>,
    request: Request,
    meta: Meta,
    stream: bool,
    include_usage: bool,
    origin: Origin,
) -> Result<Response, ApiError> {
    let asked = request.max_tokens;
    let n_ctx = backend.info().n_ctx;
    let mut rx = backend.submit(request);
    if stream {
        // Wait for the first event so that a request the engine refuses (prompt too long for
        // the context, ...) still gets its HTTP status instead of a 200 stream.
        let first = origin.next_event(&mut rx).await?;
        let clamp = match &first {
            Event::Error(e) => return Err(e.clone().into()),
            Event::Started { prompt_tokens } => clamped(asked, n_ctx, *prompt_tokens),
            _ => None,
        };
        let mut response = sse_response(
            rx,
            first,
            CompletionWire {
                meta,
                include_usage,
            },
            origin,
        );
        report_clamp(&mut response, clamp);
        return Ok(response);
    }
    let mut text = String::new();
    let mut clamp = None;
    loop {
        match origin.next_event(&mut rx).await? {
            Event::Started { prompt_tokens } => clamp = clamped(asked, n_ctx, prompt_tokens),
            Event::Text(piece) => text.push_str(&piece),
            Event::Error(e) => return Err(e.into()),
            done => {
                let f = finished(&done).ok_or_else(engine_vanished)?;
                let mut response = Json(meta.response(text, &f)).into_response();
                response.extensions_mut().insert(Tokens {
                    prompt: f.usage.prompt_tokens,
                    generated: f.usage.completion_tokens,
                });
                report_clamp(&mut response, clamp);
                return Ok(response);
            }
        }
    }
}
