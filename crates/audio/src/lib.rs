//! Audio front end of the Whisper-family encoders (llama.cpp `mtmd`'s audio path, in Rust).
//!
//! Two steps, each usable alone:
//!
//! 1. [`decode_bytes`] / [`decode_file`]: a WAV, FLAC or MP3 file (the format is sniffed from the bytes) →
//!    [`Pcm`], mono, at 16 kHz: channels are averaged, the rate is converted with miniaudio's algorithm
//!    ([`resample`]), exactly what llama.cpp feeds its mel front end. Bad input is an [`AudioError`], never a
//!    panic, and no allocation follows a size a header claims without checking it against the bytes.
//! 2. [`log_mel_windows`]: [`Pcm`] → Whisper log-mel [`MelWindow`]s of `[n_mel, 3000]` each, one per 30 s.
//!
//! ```no_run
//! let pcm = audio::decode_file("speech.wav", &audio::DecodeOptions::default())?;
//! let windows = audio::log_mel_windows(&pcm, &audio::MelParams::whisper(128))?;
//! assert_eq!(windows[0].shape(), [1, 1, 128, 3000]);
//! # Ok::<(), audio::AudioError>(())
//! ```

mod compressed;
mod decode;
mod error;
pub mod mel;
pub mod resample;

pub use decode::{
    AudioFormat, DecodeOptions, SourceInfo, decode, decode_bytes, decode_bytes_with_info,
    decode_file, sniff,
};
pub use error::AudioError;
pub use mel::{LogMel, MelParams, MelWindow, log_mel_windows, mel_filterbank};

/// The sample rate Whisper-family encoders take.
pub const WHISPER_SAMPLE_RATE: u32 = 16_000;

/// Mono PCM samples in `[-1, 1]` (nominally) at `sample_rate` Hz.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pcm {
    /// The samples.
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

impl Pcm {
    /// Length in seconds (0 for a rate of 0).
    pub fn duration_seconds(&self) -> f64 {
        if self.sample_rate == 0 {
            0.0
        } else {
            self.samples.len() as f64 / f64::from(self.sample_rate)
        }
    }
}
