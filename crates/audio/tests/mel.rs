//! The log-mel front end: window count, silence, parameters and bad input.

use audio::{AudioError, MelParams, Pcm, log_mel_windows};

fn pcm(samples: Vec<f32>) -> Pcm {
    Pcm {
        samples,
        sample_rate: 16_000,
    }
}

fn tone(n: usize) -> Vec<f32> {
    (0..n).map(|i| 0.3 * (i as f32 * 0.07).sin()).collect()
}

/// log10(2^-24) normalised: where silence sits when the clip's loudest value is high enough.
const SILENCE_QUIET_CLIP: f32 = -0.806_179_9;

#[test]
fn one_window_per_started_30_seconds_and_exactly_30_s_is_one() {
    let p = MelParams::whisper(128);
    for (n, want) in [
        (1, 1),
        (1_600, 1),
        (40_000, 1),
        (480_000, 1),
        (480_001, 2),
        (960_000, 2),
        (1_200_000, 3),
    ] {
        let windows = log_mel_windows(&pcm(tone(n)), &p).unwrap();
        assert_eq!(windows.len(), want, "{n} samples");
        assert!(
            windows
                .iter()
                .all(|w| w.shape() == [1, 1, 128, 3000] && w.data.len() == 128 * 3000)
        );
    }
}

#[test]
fn silence_is_at_the_floor() {
    let w = &log_mel_windows(&pcm(vec![0.0; 16_000]), &MelParams::whisper(80)).unwrap()[0];
    assert_eq!(w.shape(), [1, 1, 80, 3000]);
    assert!(
        w.data
            .iter()
            .all(|&v| (v - SILENCE_QUIET_CLIP).abs() < 1e-6),
        "{:?}",
        &w.data[..4]
    );
}

#[test]
fn loud_clips_clamp_8_below_the_max_and_the_tail_is_that_clamp() {
    let w = &log_mel_windows(&pcm(tone(32_000)), &MelParams::whisper(128)).unwrap()[0];
    let max = w.data.iter().copied().fold(f32::MIN, f32::max);
    let min = w.data.iter().copied().fold(f32::MAX, f32::min);
    assert!(
        (max - min - 2.0).abs() < 1e-5,
        "range {min}..{max} is 8/4 wide"
    );
    // the padded tail (frame 2999) is silent: at the clamp
    assert!((w.row(5)[2999] - min).abs() < 1e-6);
}

#[test]
fn the_second_window_of_a_long_clip_carries_its_audio() {
    let mut x = vec![0.0; 480_000];
    x.extend(tone(160_000));
    let windows = log_mel_windows(&pcm(x), &MelParams::whisper(128)).unwrap();
    assert_eq!(windows.len(), 2);
    // normalised with the global max: window 0 is at the clamp (but for its last frame, whose 400-sample
    // span reaches 200 samples into the tone), window 1 reaches the max
    let range = |v: &mut dyn Iterator<Item = f32>| {
        v.fold((f32::MAX, f32::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)))
    };
    let w0 = &windows[0];
    let (lo0, hi0) = range(&mut (0..128).flat_map(|m| w0.row(m)[..2999].to_vec()));
    let (lo1, hi1) = range(&mut windows[1].data.iter().copied());
    assert_eq!(lo0, hi0, "window 0 before its last frame is silence");
    assert!((hi1 - lo1 - 2.0).abs() < 1e-5 && lo0 == lo1);
}

#[test]
fn bad_input() {
    let p = MelParams::whisper(128);
    assert!(matches!(
        log_mel_windows(&pcm(vec![]), &p),
        Err(AudioError::Empty)
    ));
    let wrong_rate = Pcm {
        samples: vec![0.0; 100],
        sample_rate: 44_100,
    };
    assert!(matches!(
        log_mel_windows(&wrong_rate, &p),
        Err(AudioError::InvalidInput(_))
    ));
    assert!(matches!(
        log_mel_windows(&pcm(vec![0.0, f32::NAN]), &p),
        Err(AudioError::InvalidInput(_))
    ));
    for bad in [
        MelParams { n_mel: 0, ..p },
        MelParams { n_fft: 401, ..p },
        MelParams { hop_length: 0, ..p },
    ] {
        assert!(matches!(
            log_mel_windows(&pcm(vec![0.0; 10]), &bad),
            Err(AudioError::InvalidInput(_))
        ));
    }
}

#[test]
fn filterbank_is_slaney_normalised() {
    let fb = audio::mel_filterbank(80, 400, 16_000);
    assert_eq!(fb.len(), 80 * 201);
    // every filter has weight, and the area normalisation makes the low (linear-scale) filters' peaks equal:
    // 2 / (f_right - f_left) with a constant spacing of 2 × 8000/81·… Hz below 1 kHz
    for row in fb.chunks_exact(201) {
        assert!(row.iter().any(|&w| w > 0.0));
        assert!(row.iter().all(|&w| w >= 0.0));
    }
    let peak = |m: usize| {
        fb[m * 201..(m + 1) * 201]
            .iter()
            .copied()
            .fold(0.0f32, f32::max)
    };
    assert!(
        peak(0) > 0.0 && peak(79) < peak(0),
        "high filters are wider, so lower"
    );
}
