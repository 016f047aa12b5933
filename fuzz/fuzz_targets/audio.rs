//! Audio bytes (WAV/FLAC/MP3, sniffed) -> 16 kHz mono PCM -> Whisper log-mel windows. Never a
//! panic. The first byte picks the path: odd bytes also run the resampler directly on the
//! rest taken as raw f32 samples between two arbitrary rates.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 && rest.len() >= 8 {
        // Rates up to 384 kHz (any u32 would only measure the allocator).
        let rate = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap()) % 384_001;
        let (rate_in, rate_out) = (rate(&rest[..4]), rate(&rest[4..8]));
        let samples: Vec<f32> = rest[8..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let out = audio::resample::resample_linear(&samples, rate_in, rate_out);
        if rate_in != rate_out {
            let n = audio::resample::output_len(samples.len() as u64, rate_in, rate_out);
            assert_eq!(out.len() as u64, n);
        }
        return;
    }
    let options = audio::DecodeOptions {
        max_seconds: 60.0,
        ..audio::DecodeOptions::default()
    };
    let Ok(pcm) = audio::decode_bytes(rest, &options) else {
        return;
    };
    assert_eq!(pcm.sample_rate, 16_000);
    let n_mel = if mode & 2 == 0 { 80 } else { 128 };
    let windows = audio::log_mel_windows(&pcm, &audio::MelParams::whisper(n_mel));
    if let Ok(windows) = windows {
        for w in &windows {
            assert_eq!(w.shape()[2], n_mel);
        }
    }
});
