//! `server`: an OpenAI-compatible HTTP server over the mtmd library, as a library. The `mtmd
//! serve` command only turns flags into a [`Config`] and calls [`run`]; anything else can
//! embed the [`Engine`] (any [`Backend`]) or mount [`router`] in its own axum app.
//!
//! Layout: `backend.rs` is the boundary (typed requests in, events out); `engine/` implements
//! it with worker threads that own the model; `routes/` is `router(state)`, its middleware,
//! handlers (chat, completions, transcriptions) and SSE relay; `openai.rs` the wire types;
//! `api_error.rs` the error -> status table; `media_input.rs` turns `image_url` parts into
//! bitmaps and `input_audio` parts (and uploaded files) into audio clips; `metrics_text.rs`
//! renders `/metrics`; `web.rs` serves the chat page; `config.rs` and `serve.rs` are [`Config`] and
//! the [`run`] / [`serve`] / [`serve_on`] entry points; `connections.rs` the accept loop
//! (header timeout, connection cap).

mod api_error;
pub mod backend;
mod config;
mod connections;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
mod media_input;
mod metrics_text;
mod openai;
mod routes;
mod serve;
mod web;

pub use backend::{
    Backend, EngineError, EngineMetrics, Event, MediaItem, ModelInfo, Prompt, Request, Usage,
};
pub use config::{Config, ConfigError};
pub use engine::{Engine, EngineConfig, LoadError};
pub use routes::{
    AppState, DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_AUDIO_SECONDS,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_QUEUE, DEFAULT_REQUEST_TIMEOUT, ServerOptions, router,
};
pub use serve::{ServeError, run, serve, serve_on};
