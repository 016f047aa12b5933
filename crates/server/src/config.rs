//! [`Config`]: everything [`crate::run`] needs, as plain values (no flags, no downloads: the
//! caller resolves the model to local paths).

use crate::engine::EngineConfig;
use crate::routes::ServerOptions;

/// A whole server: where to listen, the engine to load and the HTTP layer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1`, `0.0.0.0`, a host name).
    pub host: String,
    /// Port to listen on (0: any free port; the bound address is printed on stderr).
    pub port: u16,
    /// The model, its mmproj and the slots. Its `n_threads` sizes the image encoder's pool
    /// only: the global rayon pool (the text model's threads) is the caller's to size.
    pub engine: EngineConfig,
    pub http: ServerOptions,
}

/// A [`Config`] [`crate::run`] refuses before binding.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("the number of slots (--parallel) must be at least 1")]
    NoSlots,
    #[error("the body limit (--max-body-mb) must be at least 1 byte")]
    NoBody,
    #[error("the audio length limit (--max-audio-seconds) must be a positive number of seconds")]
    NoAudioLength,
    #[error("the connection cap (--max-connections) must be at least 1")]
    NoConnections,
    #[error("{}: no such file", .0.display())]
    NoSuchFile(std::path::PathBuf),
}

impl Config {
    /// Checks what can be checked without loading anything: slot count, body, audio and connection limits, and
    /// that the model (and mmproj) files exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.engine.n_slots == 0 {
            return Err(ConfigError::NoSlots);
        }
        if self.http.max_body_bytes == 0 {
            return Err(ConfigError::NoBody);
        }
        if self.http.max_connections == 0 {
            return Err(ConfigError::NoConnections);
        }
        let seconds = self.http.max_audio_seconds;
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(ConfigError::NoAudioLength);
        }
        let e = &self.engine;
        for path in std::iter::once(&e.model_path).chain(e.mmproj_path.as_ref()) {
            if !path.is_file() {
                return Err(ConfigError::NoSuchFile(path.clone()));
            }
        }
        Ok(())
    }
}
