//! [`AppState`]: what every handler shares (the backend once loaded, the HTTP options and
//! the request counters), and [`ServerOptions`], the HTTP layer's settings.

use std::sync::{Arc, OnceLock};

use crate::api_error::ApiError;
use crate::backend::Backend;
use crate::media_input::MediaPolicy;
use crate::metrics_text::HttpCounters;

/// Default of [`ServerOptions::max_audio_seconds`] (`--max-audio-seconds`): ten minutes.
pub const DEFAULT_MAX_AUDIO_SECONDS: f64 = 600.0;

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

    pub(super) fn options(&self) -> &ServerOptions {
        &self.0.options
    }

    pub(super) fn http_counters(&self) -> &HttpCounters {
        &self.0.http
    }
}
