//! The one error type of the crate: every way an audio file can be refused.

use std::path::PathBuf;

/// Why an audio file (or a PCM buffer) could not be turned into samples or log-mel windows.
///
/// Decoding never panics and never allocates from a size a header claims: a claim is checked
/// against the bytes actually present first, and refused with [`AudioError::Truncated`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The bytes are not a WAV, FLAC or MP3 stream (no known magic at the start).
    #[error("not an audio file (no RIFF/WAVE, fLaC, ID3 or MPEG-audio frame header at the start)")]
    NotAudio,
    /// A recognised container holding something this crate does not decode.
    #[error("unsupported audio format: {0}")]
    Unsupported(String),
    /// The header says the stream has no channels.
    #[error("audio header declares zero channels")]
    ZeroChannels,
    /// The header says the stream has a sample rate of zero.
    #[error("audio header declares a sample rate of 0 Hz")]
    ZeroSampleRate,
    /// A header claims more data than the file holds.
    #[error("truncated audio: the header claims {claimed} {what} but only {available} are present")]
    Truncated {
        /// What was counted (e.g. "bytes of sample data", "sample frames").
        what: String,
        /// How many the header claims.
        claimed: u64,
        /// How many are actually present.
        available: u64,
    },
    /// The stream is structurally broken (bad header field, corrupt frame, ...).
    #[error("malformed audio: {0}")]
    Malformed(String),
    /// The stream decodes to no samples at all.
    #[error("audio contains no samples")]
    Empty,
    /// The audio is longer than [`crate::DecodeOptions::max_seconds`].
    #[error("audio is {seconds:.2} s long (at least), longer than the limit of {max_seconds:.2} s")]
    TooLong {
        /// Length of the audio in seconds (a lower bound when decoding stopped early at the limit).
        seconds: f64,
        /// The configured limit.
        max_seconds: f64,
    },
    /// A PCM buffer or parameter set that the log-mel front end cannot use.
    #[error("invalid input to the log-mel front end: {0}")]
    InvalidInput(String),
    /// Reading the file from disk failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path that was read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
