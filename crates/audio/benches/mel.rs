//! Log-mel for one 30 s window (128 mel bins), the front end cached as in use.

use criterion::{Criterion, criterion_group, criterion_main};

fn bench(c: &mut Criterion) {
    let samples: Vec<f32> = (0..480_000)
        .map(|i| 0.3 * (i as f32 * 0.013).sin() * (i as f32 * 0.0007).cos())
        .collect();
    let pcm = audio::Pcm {
        samples,
        sample_rate: 16_000,
    };
    let params = audio::MelParams::whisper(128);
    c.bench_function("log_mel_30s_128", |b| {
        b.iter(|| audio::log_mel_windows(std::hint::black_box(&pcm), &params).unwrap())
    });
    let short = audio::Pcm {
        samples: pcm.samples[..40_000].to_vec(),
        sample_rate: 16_000,
    };
    c.bench_function("log_mel_2.5s_128", |b| {
        b.iter(|| audio::log_mel_windows(std::hint::black_box(&short), &params).unwrap())
    });
    let stereo44k_bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/qwen2audio/speech_a_44k1_stereo.wav"
    ))
    .unwrap();
    c.bench_function("decode_2.5s_44k1_stereo_wav", |b| {
        b.iter(|| audio::decode(std::hint::black_box(&stereo44k_bytes)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
