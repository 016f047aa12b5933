//! Against llama.cpp b11312's own decoded PCM and log-mel (tests/fixtures/{qwen2audio,voxtral}).

use std::collections::BTreeMap;
use std::path::PathBuf;

use tensor::safetensors::{self, SafeTensor};

fn fixture_dir(model: &str) -> PathBuf {
    testkit::fixture(model)
}

fn reference(model: &str) -> BTreeMap<String, SafeTensor> {
    safetensors::read(fixture_dir(model).join("reference.safetensors"))
        .expect("reference.safetensors")
}

const CASES: [(&str, &str); 5] = [
    ("wav16k", "speech_a_16k_mono.wav"),
    ("wav44k_stereo", "speech_a_44k1_stereo.wav"),
    ("short", "short_0p1s_16k.wav"),
    ("flac16k", "speech_a_16k_mono.flac"),
    ("quiet", "quiet_a_16k_mono.wav"),
];

/// Largest |a - b| and Pearson correlation.
fn compare(a: &[f32], b: &[f32]) -> (f32, f64) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    let n = a.len() as f64;
    let ma = a.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let mb = b.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    (max, sab / (saa * sbb).sqrt())
}

/// Max abs PCM error allowed per case: the 16 kHz inputs are not resampled and must be bit-exact; the
/// 44.1 kHz stereo case goes through the resampler; it measures bit-exact too (glibc `sin` for the filter
/// coefficients, as miniaudio), the 1e-6 margin is for a platform libm that rounds a coefficient differently.
fn pcm_tolerance(case: &str) -> f32 {
    if case == "wav44k_stereo" { 1e-6 } else { 0.0 }
}

#[test]
fn decoded_pcm_matches_llama_cpp() {
    for model in ["qwen2audio", "voxtral"] {
        let refs = reference(model);
        for (case, file) in CASES {
            let pcm = audio::decode_file(
                fixture_dir(model).join(file),
                &audio::DecodeOptions::default(),
            )
            .unwrap();
            assert_eq!(pcm.sample_rate, 16_000);
            let want = refs[&format!("{case}.pcm.0")].to_f32().unwrap();
            assert_eq!(
                pcm.samples.len(),
                want.len(),
                "{model}/{case}: sample count"
            );
            let (max, corr) = compare(&pcm.samples, &want);
            println!("pcm {model}/{case}: max_abs {max:.3e}, correlation {corr:.9}");
            assert!(max <= pcm_tolerance(case), "{model}/{case}: max abs {max}");
            assert!(corr > 0.999_999, "{model}/{case}: correlation {corr}");
        }
    }
}

#[test]
fn log_mel_matches_llama_cpp() {
    for model in ["qwen2audio", "voxtral"] {
        let refs = reference(model);
        for (case, file) in [CASES[0], CASES[4]] {
            let pcm = audio::decode_file(
                fixture_dir(model).join(file),
                &audio::DecodeOptions::default(),
            )
            .unwrap();
            let windows = audio::log_mel_windows(&pcm, &audio::MelParams::whisper(128)).unwrap();
            assert_eq!(
                windows.len(),
                1,
                "{model}/{case}: a clip under 30 s is one window"
            );
            let reference = &refs[&format!("{case}.enc_input.0")];
            assert_eq!(
                windows[0].shape().to_vec(),
                reference.shape,
                "{model}/{case}: shape"
            );
            let want = reference.to_f32().unwrap();
            let (max, corr) = compare(&windows[0].data, &want);
            let worst = windows[0]
                .data
                .iter()
                .zip(&want)
                .enumerate()
                .max_by(|a, b| (a.1.0 - a.1.1).abs().total_cmp(&(b.1.0 - b.1.1).abs()));
            println!(
                "mel {model}/{case}: max_abs {max:.3e}, correlation {corr:.9}, worst {worst:?}"
            );
            assert!(max < 1e-4, "{model}/{case}: mel max abs {max}");
        }
    }
}
