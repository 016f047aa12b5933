//! `router(state)`: the route table and its layers. Handlers only translate: wire JSON in
//! (`openai.rs`), a [`Request`](crate::Request) to the [`Backend`](crate::Backend), its
//! events back out.
//!
//! `state.rs` is what handlers share; `middleware.rs` the API-key check, CORS, per-request
//! log and counters; `info.rs` the page, health, metrics, models and props; `generate.rs`
//! the two completion endpoints; `transcribe.rs` `/v1/audio/transcriptions` (multipart upload,
//! JSON, text or SSE answer); `sse.rs` the SSE relay of engine events.

mod generate;
mod info;
mod middleware;
mod sse;
mod state;
#[cfg(test)]
mod tests;
mod transcribe;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

pub use state::{
    AppState, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_AUDIO_SECONDS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT, ServerOptions,
};
pub(crate) use transcribe::check_form as check_transcription_form;

/// The whole HTTP API over `state` (whose backend may be set later: until then the model
/// endpoints answer 503 "Loading model").
pub fn router(state: AppState) -> Router {
    let max_body = state.options().max_body_bytes;
    let protected = Router::new()
        .route("/v1/chat/completions", post(generate::chat))
        .route("/chat/completions", post(generate::chat))
        .route("/v1/completions", post(generate::completions))
        .route("/completions", post(generate::completions))
        .route("/v1/audio/transcriptions", post(transcribe::transcriptions))
        .route("/audio/transcriptions", post(transcribe::transcriptions))
        .route("/v1/models", get(info::models))
        .route("/models", get(info::models))
        .route("/v1/models/{*id}", get(info::model_by_id))
        .route("/props", get(info::props))
        // The key is checked first: an unauthenticated client's body is never read.
        .route_layer(from_fn_with_state(state.clone(), middleware::read_body))
        .route_layer(from_fn_with_state(state.clone(), middleware::require_key));
    Router::new()
        .route("/", get(info::index))
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .merge(protected)
        .fallback(info::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .layer(from_fn(middleware::cors))
        .with_state(state)
}
