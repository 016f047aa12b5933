//! MP3 (symphonia) against the WAV it was encoded from. The files in tests/data were made with LAME 3.100
//! from the fixture WAVs: `lame -b 64 -m m --add-id3v2` (16 kHz mono, MPEG-2 layer III, behind an ID3v2 tag)
//! and `lame -b 128 -m j --resample 44.1` (44.1 kHz joint stereo); each is compared with its WAV's 16 kHz PCM.
//! There is no llama.cpp reference for MP3: these check that the decode is the same speech, aligned (LAME's
//! encoder delay and padding are trimmed), not bit-level agreement.

use std::path::Path;

fn read(rel: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(&p, &q)| f64::from(p) * f64::from(q))
            .sum::<f64>()
    };
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

#[test]
fn mp3_decodes_to_the_same_aligned_speech() {
    for (file, wav) in [
        (
            "tests/data/speech_a_16k_mono_64k.mp3",
            "speech_a_16k_mono.wav",
        ),
        (
            "tests/data/speech_a_44k1_stereo_128k.mp3",
            "speech_a_44k1_stereo.wav",
        ),
    ] {
        let wav = audio::decode(&read(&format!("../../tests/fixtures/qwen2audio/{wav}"))).unwrap();
        let bytes = read(file);
        assert_eq!(audio::sniff(&bytes), Some(audio::AudioFormat::Mp3));
        let (pcm, info) =
            audio::decode_bytes_with_info(&bytes, &audio::DecodeOptions::default()).unwrap();
        assert_eq!(pcm.sample_rate, 16_000);
        assert_eq!(
            pcm.samples.len(),
            wav.samples.len(),
            "{file}: gapless length"
        );
        let corr = correlation(&pcm.samples, &wav.samples);
        println!("{file}: {info:?}, correlation with the WAV's PCM {corr:.5}");
        assert!(corr > 0.99, "{file}: correlation {corr}");
    }
}

#[test]
fn mp3_length_limit_and_damage() {
    let bytes = read("tests/data/speech_a_16k_mono_64k.mp3");
    let opts = audio::DecodeOptions {
        max_seconds: 1.0,
        ..Default::default()
    };
    assert!(matches!(
        audio::decode_bytes(&bytes, &opts),
        Err(audio::AudioError::TooLong { .. })
    ));
    // the ID3v2 tag alone, with no audio after it
    let tag_len = 10
        + bytes[6..10]
            .iter()
            .fold(0usize, |a, &b| (a << 7) | usize::from(b));
    assert!(audio::decode(&bytes[..tag_len]).is_err());
}
