//! Any bytes through our stb_image-exact baseline JPEG decoder: Ok or a typed error, never a
//! panic; an Ok image holds exactly width * height * 3 bytes within the size limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Frames of more than this many pixels are skipped. Their decoding takes the same paths as
/// smaller ones, but a few hundred bytes declaring 16384 x 16384 make the decoder fill ~1 GiB
/// of planes (missing scan data decodes as zeros, as in stb_image): up to ~20 s an input,
/// which would drown the campaign (docs/fuzzing.md).
const MAX_FUZZ_PIXELS: usize = 1 << 16;

/// Width x height of the first baseline frame header, found naively.
fn declared_pixels(data: &[u8]) -> Option<usize> {
    let at = data
        .windows(2)
        .position(|w| w[0] == 0xFF && (w[1] == 0xC0 || w[1] == 0xC1))?;
    let b = data.get(at + 5..at + 9)?;
    Some(
        usize::from(u16::from_be_bytes([b[0], b[1]]))
            * usize::from(u16::from_be_bytes([b[2], b[3]])),
    )
}

fuzz_target!(|data: &[u8]| {
    if declared_pixels(data).is_some_and(|p| p > MAX_FUZZ_PIXELS) {
        return;
    }
    if let Ok(image) = clip::jpeg::decode(data) {
        assert!(image.width >= 1 && image.width <= clip::jpeg::MAX_SIDE);
        assert!(image.height >= 1 && image.height <= clip::jpeg::MAX_SIDE);
        assert_eq!(image.rgb.len(), image.width * image.height * 3);
    }
});
