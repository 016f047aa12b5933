//! Decoding: formats, channel mixing, and every kind of bad input as a typed error.

use audio::{AudioError, AudioFormat, DecodeOptions, decode, decode_bytes, decode_bytes_with_info};

/// A RIFF/WAVE file with one `fmt ` chunk (16 bytes) and a `data` chunk whose size field is `data_claim`.
fn wav_with(
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
    data: &[u8],
    data_claim: u32,
) -> Vec<u8> {
    let block_align = channels * (bits / 8);
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&tag.to_le_bytes());
    v.extend_from_slice(&channels.to_le_bytes());
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * u32::from(block_align)).to_le_bytes());
    v.extend_from_slice(&block_align.to_le_bytes());
    v.extend_from_slice(&bits.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_claim.to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
    wav_with(tag, channels, rate, bits, data, data.len() as u32)
}

fn s16(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(testkit::fixture("qwen2audio").join(name)).unwrap()
}

#[test]
fn every_integer_width_and_float_scales_like_miniaudio() {
    let rate = 16_000;
    // 8-bit unsigned: 0 → -1, 128 → 0.0039..., 255 → 1
    let pcm = decode(&wav(1, 1, rate, 8, &[0, 128, 255])).unwrap();
    assert_eq!(pcm.samples[0], -1.0);
    assert!((pcm.samples[1] - (128.0 / 127.5 - 1.0) as f32).abs() < 1e-7);
    assert!((pcm.samples[2] - 1.0).abs() < 1e-6);
    // 16-bit
    let pcm = decode(&wav(1, 1, rate, 16, &s16(&[-32768, 0, 16384]))).unwrap();
    assert_eq!(pcm.samples, vec![-1.0, 0.0, 0.5]);
    // 24-bit
    let d24: Vec<u8> = [-8_388_608i32, 4_194_304]
        .iter()
        .flat_map(|s| s.to_le_bytes()[..3].to_vec())
        .collect();
    assert_eq!(
        decode(&wav(1, 1, rate, 24, &d24)).unwrap().samples,
        vec![-1.0, 0.5]
    );
    // 32-bit integer
    let d32: Vec<u8> = [i32::MIN, 1 << 30]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    assert_eq!(
        decode(&wav(1, 1, rate, 32, &d32)).unwrap().samples,
        vec![-1.0, 0.5]
    );
    // 32-bit float
    let df: Vec<u8> = [0.25f32, -0.75]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    assert_eq!(
        decode(&wav(3, 1, rate, 32, &df)).unwrap().samples,
        vec![0.25, -0.75]
    );
}

#[test]
fn channels_are_averaged() {
    // stereo: (L + R) / 2; three channels: mean of three
    let pcm = decode(&wav(1, 2, 16_000, 16, &s16(&[16384, 0, -16384, -16384]))).unwrap();
    assert_eq!(pcm.samples, vec![0.25, -0.5]);
    let df: Vec<u8> = [0.3f32, 0.6, 0.9]
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let (pcm, info) =
        decode_bytes_with_info(&wav(3, 3, 16_000, 32, &df), &DecodeOptions::default()).unwrap();
    assert_eq!(pcm.samples, vec![(0.3f32 + 0.6 + 0.9) / 3.0]);
    assert_eq!(
        (info.format, info.channels, info.sample_rate, info.frames),
        (AudioFormat::Wav, 3, 16_000, 1)
    );
}

#[test]
fn other_rates_are_resampled_to_16k() {
    let one_second = vec![0u8; 2 * 48_000];
    // miniaudio's length estimate (which llama.cpp sizes its buffer with) promises one frame more than the
    // resampler makes for an exact integer ratio; that last sample stays 0
    let pcm = decode(&wav(1, 1, 48_000, 16, &one_second)).unwrap();
    assert_eq!((pcm.sample_rate, pcm.samples.len()), (16_000, 16_001));
    assert_eq!(pcm.samples[16_000], 0.0);
    let one_second_44k = vec![0u8; 2 * 44_100];
    assert_eq!(
        decode(&wav(1, 1, 44_100, 16, &one_second_44k))
            .unwrap()
            .samples
            .len(),
        16_000
    );
    let opts = DecodeOptions {
        sample_rate: 8_000,
        ..Default::default()
    };
    assert_eq!(
        decode_bytes(&wav(1, 1, 22_050, 16, &one_second_44k), &opts)
            .unwrap()
            .samples
            .len(),
        16_000
    );
}

#[test]
fn the_format_comes_from_the_bytes_not_the_name() {
    let dir = std::env::temp_dir().join(format!("audio-sniff-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let misnamed = dir.join("really_a_wav.mp3");
    std::fs::write(&misnamed, wav(1, 1, 16_000, 16, &s16(&[100, 200]))).unwrap();
    let pcm = audio::decode_file(&misnamed, &DecodeOptions::default()).unwrap();
    assert_eq!(pcm.samples.len(), 2);
    let flac_named_wav = dir.join("really_a_flac.wav");
    std::fs::write(&flac_named_wav, fixture("speech_a_16k_mono.flac")).unwrap();
    assert_eq!(
        audio::decode_file(&flac_named_wav, &DecodeOptions::default())
            .unwrap()
            .samples
            .len(),
        40_000
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        audio::sniff(&fixture("speech_a_16k_mono.flac")),
        Some(AudioFormat::Flac)
    );
    assert_eq!(
        audio::sniff(&[0xFF, 0xFB, 0x90, 0x00]),
        Some(AudioFormat::Mp3)
    );
    assert_eq!(
        audio::sniff(b"ID3\x04\x00\x00\x00\x00\x00\x00"),
        Some(AudioFormat::Mp3)
    );
}

#[test]
fn zero_channels() {
    let bytes = wav(1, 0, 16_000, 16, &s16(&[1, 2]));
    assert!(
        matches!(decode(&bytes), Err(AudioError::ZeroChannels)),
        "{:?}",
        decode(&bytes)
    );
}

#[test]
fn zero_sample_rate() {
    let bytes = wav(1, 1, 0, 16, &s16(&[1, 2]));
    assert!(
        matches!(decode(&bytes), Err(AudioError::ZeroSampleRate)),
        "{:?}",
        decode(&bytes)
    );
}

#[test]
fn zero_sample_rate_flac() {
    let mut flac = fixture("speech_a_16k_mono.flac");
    // STREAMINFO starts at byte 8; the 20-bit sample rate sits in its bytes 10..12.5
    flac[18] = 0;
    flac[19] = 0;
    flac[20] &= 0x0F;
    assert!(
        matches!(decode(&flac), Err(AudioError::ZeroSampleRate)),
        "{:?}",
        decode(&flac)
    );
}

#[test]
fn a_header_claiming_gigabytes_is_refused_before_any_allocation() {
    let bytes = wav_with(1, 2, 48_000, 16, &s16(&[1, 2, 3, 4]), 0xFFFF_FFF0);
    match decode(&bytes) {
        Err(AudioError::Truncated {
            claimed, available, ..
        }) => {
            assert_eq!((claimed, available), (0xFFFF_FFF0, 8));
        }
        other => panic!("{other:?}"),
    }
    // the same for another chunk than `data`
    let mut v = b"RIFF\0\0\0\0WAVELIST".to_vec();
    v.extend_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
    v.extend_from_slice(&[0; 16]);
    assert!(
        matches!(
            decode(&v),
            Err(AudioError::Truncated {
                claimed: 0x7FFF_FFFF,
                ..
            })
        ),
        "{:?}",
        decode(&v)
    );
    // and for an ID3v2 tag in front of an MP3
    let id3 = b"ID3\x04\x00\x00\x7F\x7F\x7F\x7F\xFF\xFB\x90\x00".to_vec();
    assert!(
        matches!(decode(&id3), Err(AudioError::Truncated { .. })),
        "{:?}",
        decode(&id3)
    );
}

#[test]
fn truncated_data() {
    let full = wav(1, 1, 16_000, 16, &s16(&[7; 1000]));
    let cut = &full[..full.len() - 500];
    match decode(cut) {
        Err(AudioError::Truncated {
            claimed: 2000,
            available: 1500,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // cut inside the header
    assert!(decode(&full[..30]).is_err());
    assert!(matches!(decode(&full[..12]), Err(AudioError::Malformed(_))));
    // a FLAC stream cut in half
    let flac = fixture("speech_a_16k_mono.flac");
    let half = &flac[..flac.len() / 2];
    assert!(
        matches!(
            decode(half),
            Err(AudioError::Truncated { .. } | AudioError::Malformed(_))
        ),
        "{:?}",
        decode(half)
    );
}

#[test]
fn not_audio_at_all() {
    assert!(matches!(
        decode(b"hello, this is plainly some text"),
        Err(AudioError::NotAudio)
    ));
    assert!(matches!(decode(b""), Err(AudioError::NotAudio)));
    assert!(matches!(
        decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
        Err(AudioError::NotAudio)
    ));
}

#[test]
fn unsupported_formats() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"OggS\0\x02\0\0\0\0\0\0\0\0".to_vec(), "Ogg"),
        (wav(6, 1, 8_000, 8, &[1, 2, 3]), "A-law"),
        (wav(3, 1, 16_000, 64, &[0; 16]), "64-bit float"),
        (wav(1, 1, 16_000, 12, &[0; 4]), "12-bit"),
        (wav(0x55, 1, 16_000, 16, &[0; 4]), "0x0055"),
        (b"RIFF\0\0\0\0AVI LIST".to_vec(), "not WAVE"),
    ];
    for (bytes, what) in cases {
        match decode(&bytes) {
            Err(AudioError::Unsupported(m)) => assert!(m.contains(what), "{m} should name {what}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn no_samples_is_an_error() {
    assert!(matches!(
        decode(&wav(1, 1, 16_000, 16, &[])),
        Err(AudioError::Empty)
    ));
}

#[test]
fn longer_than_the_limit_is_an_error_naming_both_lengths() {
    let two_seconds = vec![0u8; 2 * 2 * 16_000];
    let opts = DecodeOptions {
        max_seconds: 1.5,
        ..Default::default()
    };
    let err = decode_bytes(&wav(1, 1, 16_000, 16, &two_seconds), &opts).unwrap_err();
    assert!(
        matches!(err, AudioError::TooLong { seconds, max_seconds } if seconds == 2.0 && max_seconds == 1.5)
    );
    let text = err.to_string();
    assert!(text.contains("2.00 s") && text.contains("1.50 s"), "{text}");

    // default limit: 600 s (a 601 s, 1 kHz, 8-bit file is only 601 kB)
    let err = decode(&wav(1, 1, 1_000, 8, &vec![128u8; 601_000])).unwrap_err();
    assert!(
        err.to_string().contains("601.00 s") && err.to_string().contains("600.00 s"),
        "{err}"
    );
    assert!(decode(&wav(1, 1, 1_000, 8, &vec![128u8; 600_000])).is_ok());

    // compressed streams stop decoding at the limit
    let opts = DecodeOptions {
        max_seconds: 1.0,
        ..Default::default()
    };
    let err = decode_bytes(&fixture("speech_a_16k_mono.flac"), &opts).unwrap_err();
    assert!(
        matches!(err, AudioError::TooLong { max_seconds, .. } if max_seconds == 1.0),
        "{err}"
    );
}

#[test]
fn bad_options_are_refused() {
    let ok = wav(1, 1, 16_000, 16, &s16(&[1]));
    for max_seconds in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let opts = DecodeOptions {
            max_seconds,
            ..Default::default()
        };
        assert!(matches!(
            decode_bytes(&ok, &opts),
            Err(AudioError::InvalidInput(_))
        ));
    }
    let opts = DecodeOptions {
        sample_rate: 0,
        ..Default::default()
    };
    assert!(matches!(
        decode_bytes(&ok, &opts),
        Err(AudioError::InvalidInput(_))
    ));
}

#[test]
fn missing_file_is_an_io_error() {
    let err = audio::decode_file("/nonexistent/dir/x.wav", &DecodeOptions::default()).unwrap_err();
    assert!(
        matches!(err, AudioError::Io { .. }) && err.to_string().contains("/nonexistent/dir/x.wav")
    );
}
