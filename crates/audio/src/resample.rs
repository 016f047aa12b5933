//! Sample-rate conversion that reproduces what llama.cpp's audio loader does.
//!
//! llama.cpp (`mtmd_helper`) decodes audio with miniaudio and asks its decoder for 16 kHz mono f32. miniaudio
//! converts with its *linear* resampler, preceded (downsampling) or followed (upsampling) by a 4th-order
//! Butterworth low-pass made of two cascaded biquads, cut off at the Nyquist frequency of the lower rate. This
//! module is an independent implementation of that algorithm, written from its description:
//!
//! * the rates are reduced by their gcd (44100:16000 becomes 441:160) and the output clock advances by
//!   `in / out` input frames per output frame, kept as an integer part and a remainder over `out`;
//! * a low-pass of order 4 = two biquads with the Butterworth pole quality factors `q_k = 1 / (2 cos((2k+1)π/8))`,
//!   RBJ low-pass coefficients at the reduced rates, run in single precision (transposed direct form II);
//! * downsampling: every input frame goes through the filter as it is consumed; each output is the linear
//!   interpolation `x0 + (x1 - x0) · frac` between the last two filtered input frames. The clock starts one frame
//!   before the first input, so the first output is 0 and the output lags the input by one input frame
//!   (llama.cpp's PCM has that lag too);
//! * upsampling: the interpolation runs on raw input frames and the filter runs on the output frames.
//!
//! A sinc or polyphase resampler would be more accurate, but the Whisper encoder is fed what llama.cpp feeds it,
//! and this one matches llama.cpp's PCM to float rounding (see the crate's tests for the measured figures).

/// Order of the low-pass filter around the linear interpolator (miniaudio's default for its decoder).
pub const LPF_ORDER: usize = 4;

/// One biquad section of the anti-alias filter, in single precision as miniaudio runs it.
#[derive(Clone, Copy, Debug)]
struct Biquad {
    b0: f32,
    b1: f32,
    b2: f32,
    a1: f32,
    a2: f32,
    r1: f32,
    r2: f32,
}

/// `cos` as `sin(π/2 − x)`: how miniaudio evaluates the cosine, kept for bit-level agreement.
fn cos_via_sin(x: f64) -> f64 {
    (std::f64::consts::FRAC_PI_2 - x).sin()
}

impl Biquad {
    /// RBJ-cookbook low-pass at `cutoff` Hz for `rate` Hz with quality `q`.
    fn lowpass(rate: f64, cutoff: f64, q: f64) -> Self {
        let w = 2.0 * std::f64::consts::PI * cutoff / rate;
        let s = w.sin();
        let c = cos_via_sin(w);
        let alpha = s / (2.0 * q);
        let a0 = 1.0 + alpha;
        Biquad {
            b0: (((1.0 - c) / 2.0) / a0) as f32,
            b1: ((1.0 - c) / a0) as f32,
            b2: (((1.0 - c) / 2.0) / a0) as f32,
            a1: ((-2.0 * c) / a0) as f32,
            a2: ((1.0 - alpha) / a0) as f32,
            r1: 0.0,
            r2: 0.0,
        }
    }

    #[inline]
    fn process(&mut self, x: f32) -> f32 {
        let y = self.b0 * x + self.r1;
        self.r1 = self.b1 * x - self.a1 * y + self.r2;
        self.r2 = self.b2 * x - self.a2 * y;
        y
    }
}

/// The cascaded Butterworth low-pass (order [`LPF_ORDER`]).
#[derive(Clone, Debug)]
struct LowPass {
    sections: Vec<Biquad>,
}

impl LowPass {
    fn new(rate: f64, cutoff: f64, order: usize) -> Self {
        let sections = (0..order / 2)
            .map(|k| {
                let angle = (1 + 2 * k) as f64 * (std::f64::consts::PI / (2 * order) as f64);
                let q = 1.0 / (2.0 * cos_via_sin(angle));
                Biquad::lowpass(rate, cutoff, q)
            })
            .collect();
        LowPass { sections }
    }

    #[inline]
    fn process(&mut self, mut x: f32) -> f32 {
        for s in &mut self.sections {
            x = s.process(x);
        }
        x
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How many samples llama.cpp's loader holds for `n_in` input frames resampled from `rate_in` to `rate_out`.
///
/// llama.cpp sizes its buffer with miniaudio's frame-count estimate and keeps that size even when the resampler
/// produced one frame less (the missing frame stays 0). The estimate is `floor(n·out/in)`, plus one when the
/// (unreduced) integer ratio test below passes; for equal rates it is `n_in`.
pub fn output_len(n_in: u64, rate_in: u32, rate_out: u32) -> u64 {
    if n_in == 0 || rate_in == 0 || rate_out == 0 {
        return 0;
    }
    if rate_in == rate_out {
        return n_in;
    }
    let (rin, rout) = (u128::from(rate_in), u128::from(rate_out));
    let n = u128::from(n_in);
    let mut out = n * rout / rin;
    let from_frac = (out * (rin / rout)) / rout;
    let preliminary = out * (rin % rout) + from_frac;
    if preliminary <= n {
        out += 1;
    }
    // `out` is at most about n·out/in + 1, which fits in u64 for any u64 input and u32 rates
    u64::try_from(out).unwrap_or(u64::MAX)
}

/// Resamples mono `samples` from `rate_in` Hz to `rate_out` Hz with the linear + low-pass algorithm described in
/// the module documentation. The result has [`output_len`] samples. Rates of 0 give an empty result.
pub fn resample_linear(samples: &[f32], rate_in: u32, rate_out: u32) -> Vec<f32> {
    if rate_in == 0 || rate_out == 0 {
        return Vec::new();
    }
    if rate_in == rate_out {
        return samples.to_vec();
    }
    let g = gcd(u64::from(rate_in), u64::from(rate_out));
    let (rin, rout) = (u64::from(rate_in) / g, u64::from(rate_out) / g);
    let lpf_rate = rin.max(rout) as f64;
    let cutoff = rin.min(rout) as f64 * 0.5;
    let mut lpf = LowPass::new(lpf_rate, cutoff, LPF_ORDER);

    let target = output_len(samples.len() as u64, rate_in, rate_out);
    // The target is about n·out/in: bounded by the input, never by a claim.
    let mut out = Vec::with_capacity(usize::try_from(target).unwrap_or(0));
    let (adv_int, adv_frac) = (rin / rout, rin % rout);
    let downsampling = rin > rout;
    let (mut t_int, mut t_frac) = (1u64, 0u64);
    let (mut x0, mut x1) = (0.0f32, 0.0f32);
    let mut input = samples.iter();
    'outer: loop {
        while t_int > 0 {
            let Some(&x) = input.next() else { break 'outer };
            x0 = x1;
            x1 = if downsampling { lpf.process(x) } else { x };
            t_int -= 1;
        }
        let a = t_frac as f32 / rout as f32;
        let y = x0 + (x1 - x0) * a;
        out.push(if downsampling { y } else { lpf.process(y) });
        t_int += adv_int;
        t_frac += adv_frac;
        if t_frac >= rout {
            t_frac -= rout;
            t_int += 1;
        }
    }
    out.resize(usize::try_from(target).unwrap_or(out.len()), 0.0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_rates_pass_through() {
        let x = [0.1f32, -0.2, 0.3];
        assert_eq!(resample_linear(&x, 16_000, 16_000), x.to_vec());
    }

    #[test]
    fn lengths_follow_the_loader_rule() {
        assert_eq!(output_len(110_250, 44_100, 16_000), 40_000);
        assert_eq!(output_len(62_413, 48_000, 16_000), 20_805);
        assert_eq!(output_len(10_407, 8_000, 16_000), 20_814);
        assert_eq!(output_len(1, 48_000, 16_000), 1);
        assert_eq!(output_len(0, 48_000, 16_000), 0);
        assert_eq!(
            resample_linear(&vec![0.5; 62_413], 48_000, 16_000).len(),
            20_805
        );
        assert_eq!(
            resample_linear(&vec![0.5; 10_407], 8_000, 16_000).len(),
            20_814
        );
    }

    #[test]
    fn dc_passes_and_first_output_is_the_one_frame_lag() {
        let y = resample_linear(&vec![0.5; 48_000], 48_000, 16_000);
        assert_eq!(y[0], 0.0);
        // unity DC gain once the filter settled
        assert!((y[10_000] - 0.5).abs() < 1e-5, "{}", y[10_000]);
        let up = resample_linear(&vec![0.5; 8_000], 8_000, 16_000);
        assert!((up[10_000] - 0.5).abs() < 1e-5, "{}", up[10_000]);
    }

    #[test]
    fn removes_content_above_the_output_nyquist() {
        // a 15 kHz tone at 48 kHz aliases to 1 kHz at 16 kHz unless filtered out
        let x: Vec<f32> = (0..48_000)
            .map(|i| (2.0 * std::f64::consts::PI * 15_000.0 * i as f64 / 48_000.0).sin() as f32)
            .collect();
        let y = resample_linear(&x, 48_000, 16_000);
        let rms = (y[1000..].iter().map(|v| v * v).sum::<f32>() / (y.len() - 1000) as f32).sqrt();
        assert!(rms < 0.05, "aliased rms {rms}");
    }
}
