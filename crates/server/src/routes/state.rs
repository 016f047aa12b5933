//! [`AppState`]: what every handler shares (the backend once loaded, the HTTP options and
//! the request counters), and [`ServerOptions`], the HTTP layer's settings.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::api_error::ApiError;
use crate::backend::Backend;
use crate::media_input::MediaPolicy;
use crate::metrics_text::HttpCounters;

/// Default of [`ServerOptions::max_audio_seconds`] (`--max-audio-seconds`): ten minutes.
pub const DEFAULT_MAX_AUDIO_SECONDS: f64 = 600.0;

/// Defaults of the connection and request limits (`mtmd serve` flags of the same names).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
pub const DEFAULT_MAX_QUEUE: usize = 64;

/// Settings of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub api_key: Option<String>,
    pub max_body_bytes: usize,
    pub allow_remote_media: bool,
    /// Longest audio clip accepted (an `input_audio` part or a transcription upload), in
    /// seconds; longer ones are refused with 400 `audio_too_long`. The CLI's
    /// `--max-audio-seconds`; [`DEFAULT_MAX_AUDIO_SECONDS`] by default.
    pub max_audio_seconds: f64,
    /// Print one line per request on stderr.
    pub log_requests: bool,
    /// A connection must deliver a request's head (line and headers) within this time, also
    /// when it sits idle between keep-alive requests; else it is closed (`None`: no limit).
    /// Applies to [`crate::serve`] / [`crate::serve_on`], not to a router mounted elsewhere.
    pub header_timeout: Option<Duration>,
    /// A request's whole body must arrive within this time; else 408 `request_timeout`.
    pub body_timeout: Option<Duration>,
    /// A request must be answered (queue wait, prompt and generation) within this time once
    /// its body is read; else 504 `timeout` (an error event when streaming) and its generation
    /// stops (`--timeout`; `None`: no limit).
    pub request_timeout: Option<Duration>,
    /// Open connections at most; further ones wait in the listen backlog until one closes
    /// (applies to [`crate::serve`] / [`crate::serve_on`]).
    pub max_connections: usize,
    /// Generation requests that may wait for a slot; one more is answered 503 `queue_full`
    /// with `Retry-After`.
    pub max_queue: usize,
}

impl Default for ServerOptions {
    /// What `mtmd serve` uses without flags (no key, 64 MB bodies, no remote media, no log).
    fn default() -> Self {
        ServerOptions {
            api_key: None,
            max_body_bytes: 64 << 20,
            allow_remote_media: false,
            max_audio_seconds: DEFAULT_MAX_AUDIO_SECONDS,
            log_requests: false,
            header_timeout: Some(DEFAULT_HEADER_TIMEOUT),
            body_timeout: Some(DEFAULT_BODY_TIMEOUT),
            request_timeout: Some(DEFAULT_REQUEST_TIMEOUT),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_queue: DEFAULT_MAX_QUEUE,
        }
    }
}

/// A generation request counted against `--parallel` + `--max-queue` until it is dropped
/// (answered, failed or abandoned by its client).
pub(super) struct Admission(Arc<Shared>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every handler shares: the backend once loaded, options and counters.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

struct Shared {
    backend: OnceLock<Arc<dyn Backend>>,
    load_error: OnceLock<String>,
    options: ServerOptions,
    http: HttpCounters,
    /// Generation requests submitted and not yet dropped.
    in_flight: AtomicUsize,
}

impl AppState {
    pub fn new(options: ServerOptions) -> Self {
        AppState(Arc::new(Shared {
            backend: OnceLock::new(),
            load_error: OnceLock::new(),
            options,
            http: HttpCounters::default(),
            in_flight: AtomicUsize::new(0),
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

    pub(super) fn backend(&self) -> Result<Arc<dyn Backend>, ApiError> {
        match (self.0.backend.get(), self.0.load_error.get()) {
            (Some(b), _) => Ok(b.clone()),
            (None, Some(e)) => Err(ApiError::LoadFailed(e.clone())),
            (None, None) => Err(ApiError::Unavailable),
        }
    }

    pub(super) fn media_policy(&self) -> MediaPolicy {
        MediaPolicy {
            allow_remote: self.0.options.allow_remote_media,
            max_bytes: self.0.options.max_body_bytes,
            max_audio_seconds: self.0.options.max_audio_seconds,
        }
    }

    /// Admits one more generation request, or refuses it when `n_slots` are busy and
    /// `max_queue` wait already. Counted here rather than in the engine so that the bound
    /// holds for any backend and is checked before the request is submitted.
    pub(super) fn admit(&self, n_slots: usize) -> Result<Admission, ApiError> {
        let max_queue = self.0.options.max_queue;
        let bound = n_slots.saturating_add(max_queue);
        self.0
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < bound).then_some(n + 1)
            })
            .map(|_| Admission(self.0.clone()))
            .map_err(|_| ApiError::QueueFull(max_queue))
    }

    pub(crate) fn options(&self) -> &ServerOptions {
        &self.0.options
    }

    pub(super) fn http_counters(&self) -> &HttpCounters {
        &self.0.http
    }
}
