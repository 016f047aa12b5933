//! The image front door: format sniffing, size limits, decoding (our JPEG decoder first, the
//! `image` crate otherwise), EXIF orientation. Never a panic; an Ok bitmap is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(bitmap) = clip::Bitmap::from_bytes(data) {
        assert!(bitmap.width >= 1 && bitmap.width <= clip::bitmap::MAX_SIDE);
        assert!(bitmap.height >= 1 && bitmap.height <= clip::bitmap::MAX_SIDE);
        assert_eq!(
            bitmap.rgb.len() as u64,
            3 * u64::from(bitmap.width) * u64::from(bitmap.height)
        );
    }
});
