//! `/v1/chat/completions` and `/v1/completions`: the body parsed into a [`Request`],
//! submitted to the backend, and its events relayed as one JSON response or (`stream`) as
//! SSE (`sse.rs`).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::AppState;
use super::middleware::Tokens;
use super::sse::{CompletionWire, sse_response};
use crate::api_error::ApiError;
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

/// Where a request came from, for its log line.
pub(super) struct Origin {
    pub method: Method,
    pub path: String,
    pub start: Instant,
    pub log: bool,
}

impl Origin {
    pub(super) fn new(state: &AppState, method: Method, uri: &axum::http::Uri) -> Self {
        Self {
            method,
            path: uri.path().to_owned(),
            start: Instant::now(),
            log: state.options().log_requests,
        }
    }
}

pub(super) async fn chat(
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

pub(super) async fn completions(
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
        return Ok(sse_response(
            rx,
            first,
            CompletionWire {
                meta,
                include_usage,
            },
            origin,
        ));
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
