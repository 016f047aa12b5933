//! Decoding arbitrary or damaged bytes returns (Ok or a typed error) and never panics.

use audio::{DecodeOptions, decode_bytes};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(testkit::fixture("qwen2audio").join(name)).unwrap()
}

fn opts() -> DecodeOptions {
    // keep each case cheap even when a mutation makes a header claim a long file
    DecodeOptions {
        max_seconds: 5.0,
        ..Default::default()
    }
}

/// Flips `edits` (position, value) into `base` (positions wrap), then keeps the first `keep` bytes.
fn mutate(mut base: Vec<u8>, edits: &[(usize, u8)], keep: usize) -> Vec<u8> {
    let n = base.len();
    for &(at, v) in edits {
        base[at % n] = v;
    }
    base.truncate(keep.min(n));
    base
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_bytes(&bytes, &opts());
    }

    #[test]
    fn arbitrary_bytes_behind_each_magic(
        magic in prop::sample::select(vec![&b"RIFF\x24\0\0\0WAVEfmt "[..], b"fLaC", b"ID3\x03\0\0\0\0\0\x10", b"\xFF\xFB\x90\x64"]),
        tail in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let mut bytes = magic.to_vec();
        bytes.extend_from_slice(&tail);
        let _ = decode_bytes(&bytes, &opts());
    }

    #[test]
    fn mutated_wav_header_and_body(
        edits in proptest::collection::vec((0usize..64, any::<u8>()), 1..6),
        more in proptest::collection::vec((0usize..4096, any::<u8>()), 0..4),
        keep in 0usize..4096,
    ) {
        let wav = fixture("short_0p1s_16k.wav");
        let mut all = edits;
        all.extend(more);
        let _ = decode_bytes(&mutate(wav, &all, keep), &opts());
    }

    #[test]
    fn mutated_flac(
        edits in proptest::collection::vec((0usize..50_000, any::<u8>()), 1..6),
        keep in 0usize..50_000,
    ) {
        let flac = fixture("speech_a_16k_mono.flac");
        let _ = decode_bytes(&mutate(flac, &edits, keep), &opts());
    }
}
