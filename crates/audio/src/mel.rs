//! Whisper log-mel spectrogram, cut into the 30 s windows the encoder takes.
//!
//! Per frame (hop 160 samples, 400-sample periodic Hann window, centred: the signal is reflected at its start
//! and continued with zeros at its end) the power spectrum `|X|²` of a 400-point FFT goes through a Slaney mel
//! filterbank, then `log10(max(mel, 2^-24))`. Over the whole clip the maximum `M` is taken, every value is
//! clamped below at `M − 8` and mapped to `(x + 4) / 4`. The frames are cut into windows of 3000 frames
//! (30 s): a clip of up to 30 s gives one window, a longer one `ceil(len / 30 s)` windows, the last padded with
//! silence. This is llama.cpp's `mtmd` front end for Whisper-style encoders (qwen2a, voxtral, ultravox, ...),
//! except that a clip of exactly a multiple of 30 s gets no extra all-silent window.

use std::sync::{Arc, Mutex, OnceLock};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::Pcm;
use crate::error::AudioError;

/// Smallest mel power kept before the logarithm: llama.cpp's floor (HF's WhisperFeatureExtractor uses 1e-10).
pub const MEL_FLOOR: f64 = 5.960_464_477_539_063e-8; // 2^-24

/// Shape and constants of the log-mel front end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MelParams {
    /// Mel bins: 80 (Whisper ≤ v2) or 128 (Whisper v3, Qwen2-Audio, Voxtral); the mmproj's
    /// `clip.audio.num_mel_bins` says which.
    pub n_mel: usize,
    /// FFT size and window length (Whisper: 400).
    pub n_fft: usize,
    /// Hop between frames in samples (Whisper: 160, i.e. 10 ms).
    pub hop_length: usize,
    /// Sample rate the PCM must have (Whisper: 16 kHz).
    pub sample_rate: u32,
    /// Frames per encoder window (Whisper: 3000, i.e. 30 s).
    pub frames_per_window: usize,
}

impl MelParams {
    /// Whisper's front end with `n_mel` mel bins.
    pub const fn whisper(n_mel: usize) -> Self {
        MelParams {
            n_mel,
            n_fft: 400,
            hop_length: 160,
            sample_rate: crate::WHISPER_SAMPLE_RATE,
            frames_per_window: 3000,
        }
    }

    /// Samples of audio one window covers (480 000 for Whisper).
    pub fn samples_per_window(&self) -> usize {
        self.frames_per_window * self.hop_length
    }

    /// How many windows `n_samples` samples give: at least one, then one per started window.
    pub fn n_windows(&self, n_samples: usize) -> usize {
        n_samples.div_ceil(self.samples_per_window()).max(1)
    }

    fn validate(&self) -> Result<(), AudioError> {
        let bad = |m: &str| Err(AudioError::InvalidInput(m.to_string()));
        if self.n_mel == 0 || self.n_mel > 1024 {
            return bad("n_mel must be in 1..=1024");
        }
        if self.n_fft < 2 || !self.n_fft.is_multiple_of(2) || self.n_fft > 1 << 16 {
            return bad("n_fft must be even and in 2..=65536");
        }
        if self.hop_length == 0 || self.frames_per_window == 0 || self.sample_rate == 0 {
            return bad("hop_length, frames_per_window and sample_rate must be positive");
        }
        if self
            .frames_per_window
            .checked_mul(self.hop_length)
            .is_none()
        {
            return bad("frames_per_window × hop_length overflows");
        }
        Ok(())
    }
}

/// One encoder input: `n_mel × n_frames` values, row-major (mel bin major), i.e. the `[1, 1, n_mel, n_frames]`
/// layout of the Whisper encoder input.
#[derive(Clone, Debug, PartialEq)]
pub struct MelWindow {
    /// Mel bins (rows).
    pub n_mel: usize,
    /// Frames (columns), 3000 for Whisper.
    pub n_frames: usize,
    /// `data[m * n_frames + t]` is mel bin `m` of frame `t`.
    pub data: Vec<f32>,
}

impl MelWindow {
    /// The frames of mel bin `m`.
    pub fn row(&self, m: usize) -> &[f32] {
        &self.data[m * self.n_frames..(m + 1) * self.n_frames]
    }

    /// The encoder input shape `[1, 1, n_mel, n_frames]`.
    pub fn shape(&self) -> [usize; 4] {
        [1, 1, self.n_mel, self.n_frames]
    }
}

/// The Slaney-style mel filterbank (librosa's default, as Whisper and llama.cpp build it): `n_mel` triangles on
/// the Slaney mel scale (linear below 1 kHz, logarithmic above) from 0 Hz to Nyquist, each scaled by
/// `2 / (f_right − f_left)` (area normalisation). Returns `n_mel × (n_fft/2 + 1)` weights, row-major.
pub fn mel_filterbank(n_mel: usize, n_fft: usize, sample_rate: u32) -> Vec<f32> {
    const F_SP: f64 = 200.0 / 3.0; // Hz per mel below 1 kHz
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let log_step = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f < MIN_LOG_HZ {
            f / F_SP
        } else {
            MIN_LOG_MEL + (f / MIN_LOG_HZ).ln() / log_step
        }
    };
    let mel_to_hz = |m: f64| {
        if m < MIN_LOG_MEL {
            m * F_SP
        } else {
            MIN_LOG_HZ * ((m - MIN_LOG_MEL) * log_step).exp()
        }
    };

    let n_bins = n_fft / 2 + 1;
    let sr = f64::from(sample_rate);
    let top = hz_to_mel(sr / 2.0);
    let edges: Vec<f64> = (0..n_mel + 2)
        .map(|i| mel_to_hz(top * i as f64 / (n_mel + 1) as f64))
        .collect();
    let mut out = vec![0.0f32; n_mel * n_bins];
    for m in 0..n_mel {
        let (lo, mid, hi) = (edges[m], edges[m + 1], edges[m + 2]);
        let scale = 2.0 / (hi - lo).max(1e-30);
        for k in 0..n_bins {
            let f = k as f64 * sr / n_fft as f64;
            let w = if f >= lo && f <= mid {
                (f - lo) / (mid - lo).max(1e-30)
            } else if f > mid && f <= hi {
                (hi - f) / (hi - mid).max(1e-30)
            } else {
                0.0
            };
            out[m * n_bins + k] = (w * scale) as f32;
        }
    }
    out
}

/// A filter's non-zero span: first bin and weights.
#[derive(Clone, Debug)]
struct Band {
    first: usize,
    weights: Vec<f32>,
}

/// A log-mel front end with everything precomputed: FFT plan, window and filterbank.
pub struct LogMel {
    params: MelParams,
    fft: Arc<dyn Fft<f32>>,
    window: Vec<f32>,
    bands: Vec<Band>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    /// Plans the FFT and builds the window and filterbank for `params`.
    pub fn new(params: MelParams) -> Result<Self, AudioError> {
        params.validate()?;
        let fft = FftPlanner::new().plan_fft_forward(params.n_fft);
        let n = params.n_fft;
        let window = (0..n)
            .map(|i| {
                (0.5 * (1.0 - (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())) as f32
            })
            .collect();
        let n_bins = n / 2 + 1;
        let dense = mel_filterbank(params.n_mel, n, params.sample_rate);
        let bands = dense
            .chunks_exact(n_bins)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |l| l + 1);
                Band {
                    first,
                    weights: row[first..last].to_vec(),
                }
            })
            .collect();
        Ok(LogMel {
            params,
            fft,
            window,
            bands,
        })
    }

    /// The parameters this front end was built for.
    pub fn params(&self) -> &MelParams {
        &self.params
    }

    /// The log-mel windows of `pcm` (see the module documentation).
    pub fn windows(&self, pcm: &Pcm) -> Result<Vec<MelWindow>, AudioError> {
        let p = &self.params;
        if pcm.sample_rate != p.sample_rate {
            return Err(AudioError::InvalidInput(format!(
                "PCM is at {} Hz, the mel front end needs {} Hz (resample first)",
                pcm.sample_rate, p.sample_rate
            )));
        }
        let x = &pcm.samples;
        if x.is_empty() {
            return Err(AudioError::Empty);
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(AudioError::InvalidInput(format!(
                "sample {i} is not a finite number"
            )));
        }
        let n_windows = p.n_windows(x.len());
        let n_frames = n_windows * p.frames_per_window;
        let n_mel = p.n_mel;
        // frame-major while computing, transposed into per-window row-major at the end
        let mut logmel = vec![MEL_FLOOR.log10() as f32; n_frames * n_mel];
        let half = p.n_fft / 2;
        let sample = |idx: isize| -> f32 {
            // reflect at the start (no repeat of sample 0), zeros past the end
            let k = idx.unsigned_abs();
            x.get(k).copied().unwrap_or(0.0)
        };
        let mut buf = vec![Complex::new(0.0f32, 0.0); p.n_fft];
        let mut scratch = vec![Complex::new(0.0f32, 0.0); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0.0f32; half + 1];
        for t in 0..n_frames {
            let start = (t * p.hop_length) as isize - half as isize;
            if start >= x.len() as isize {
                break; // the rest is silence: already at the floor
            }
            for (j, (c, w)) in buf.iter_mut().zip(&self.window).enumerate() {
                *c = Complex::new(w * sample(start + j as isize), 0.0);
            }
            self.fft.process_with_scratch(&mut buf, &mut scratch);
            for (pw, c) in power.iter_mut().zip(&buf) {
                *pw = c.re * c.re + c.im * c.im;
            }
            let row = &mut logmel[t * n_mel..(t + 1) * n_mel];
            for (out, band) in row.iter_mut().zip(&self.bands) {
                let spec = &power[band.first..band.first + band.weights.len()];
                let sum: f64 = spec
                    .iter()
                    .zip(&band.weights)
                    .map(|(&s, &w)| f64::from(s * w))
                    .sum();
                *out = sum.max(MEL_FLOOR).log10() as f32;
            }
        }
        let max = logmel.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let lowest = f64::from(max) - 8.0;
        let normalize = |v: f32| ((f64::from(v).max(lowest) + 4.0) / 4.0) as f32;

        let fw = p.frames_per_window;
        Ok((0..n_windows)
            .map(|w| {
                let mut data = vec![0.0f32; n_mel * fw];
                for t in 0..fw {
                    let frame = &logmel[(w * fw + t) * n_mel..(w * fw + t + 1) * n_mel];
                    for (m, &v) in frame.iter().enumerate() {
                        data[m * fw + t] = normalize(v);
                    }
                }
                MelWindow {
                    n_mel,
                    n_frames: fw,
                    data,
                }
            })
            .collect())
    }
}

/// The log-mel windows of `pcm` for `params`, with the front end (FFT plan, filterbank) cached per `params`.
pub fn log_mel_windows(pcm: &Pcm, params: &MelParams) -> Result<Vec<MelWindow>, AudioError> {
    cached(params)?.windows(pcm)
}

/// The shared front end for `params`, built on first use.
pub fn cached(params: &MelParams) -> Result<Arc<LogMel>, AudioError> {
    static CACHE: OnceLock<Mutex<Vec<Arc<LogMel>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(Vec::new()));
    let mut entries = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(hit) = entries.iter().find(|e| e.params == *params) {
        return Ok(Arc::clone(hit));
    }
    let made = Arc::new(LogMel::new(*params)?);
    entries.push(Arc::clone(&made));
    Ok(made)
}
