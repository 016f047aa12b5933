//! The layers around every handler: request counting and the per-request log line
//! ([`observe`]), CORS ([`cors`]), the API-key check ([`require_key`]) and the bounded,
//! timed read of the body ([`read_body`]).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::api_error::{ApiError, seconds};

/// Token counts a handler attaches to its response for the log line.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tokens {
    pub prompt: usize,
    pub generated: usize,
}

/// Marks a streamed response: its log line is written when the stream ends, not here.
#[derive(Debug, Clone, Copy)]
pub(super) struct Streamed;

/// Counts every answer by route and status; logs the non-streamed ones.
pub(super) async fn observe(
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
    state.http_counters().record(&route, status);
    let quiet = matches!(route.as_str(), "/health" | "/metrics") && status < 400;
    if state.options().log_requests && !quiet && response.extensions().get::<Streamed>().is_none() {
        let tokens = response.extensions().get::<Tokens>().copied();
        log_line(&method, &path, status, tokens, start, "");
    }
    response
}

pub(super) fn log_line(
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
pub(super) async fn cors(req: axum::extract::Request, next: Next) -> Response {
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

pub(super) async fn require_key(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.options().api_key {
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

/// Whether `given` is `key`, in a time that depends on `given`'s length only: every byte of
/// `given` is compared (against `key` repeated), the length difference is folded into the same
/// accumulator, and nothing stops early, so neither the key's bytes nor its length can be
/// found by timing wrong guesses.
pub(super) fn same_key(given: &[u8], key: &[u8]) -> bool {
    if key.is_empty() {
        return false;
    }
    let mut diff = u64::from(given.len() != key.len());
    for (i, g) in given.iter().enumerate() {
        diff |= u64::from(g ^ key[i % key.len()]);
    }
    std::hint::black_box(diff) == 0
}

/// Reads the whole body before the handler runs, within `--body-timeout` and
/// `--max-body-mb`: a client that trickles its body gets 408 and never reaches the engine
/// (nor holds a slot), and nothing is allocated by the size a client claims.
pub(super) async fn read_body(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let options = state.options();
    let max = options.max_body_bytes;
    // The body is collected as it arrives, whatever `Content-Length` claims. An over-long
    // body is refused once the limit is reached, not from its header: an honest client then
    // has most of its upload sent and reads the 413 instead of a reset connection.
    let too_large = || ApiError::RequestTooLarge(max >> 20).into_response();
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, max);
    let read = match options.body_timeout {
        Some(limit) => match tokio::time::timeout(limit, read).await {
            Ok(read) => read,
            Err(_) => return ApiError::BodyTimeout(seconds(limit)).into_response(),
        },
        None => read.await,
    };
    match read {
        Ok(bytes) => {
            next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Err(e) if is_length_limit(&e) => too_large(),
        Err(e) => ApiError::InvalidRequest(format!("could not read the request body: {e}"))
            .into_response(),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}
