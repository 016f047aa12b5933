//! Target-size arithmetic. The float steps run in f32 in the reference's order, because the rounding of
//! those f32 values decides the token count, which must match llama.cpp exactly.

/// Size of the resized image for dynamic-resolution models (Qwen2/2.5/3-VL; HF calls it `smart_resize`):
/// each side rounded to a multiple of `align`, then rescaled preserving the aspect ratio if the area falls
/// outside `[min_pixels, max_pixels]`. Returns `(width, height)`.
pub fn size_within_pixel_budget(
    width: u32,
    height: u32,
    align: u32,
    min_pixels: u64,
    max_pixels: u64,
) -> (u32, u32) {
    let align_i = i64::from(align.max(1));
    let align_f = align_i as f32;
    let to_multiple = |v: f32, op: fn(f32) -> f32| (op(v / align_f) as i64) * align_i;
    let (w, h) = (width as f32, height as f32);
    let mut h_bar = align_i.max(to_multiple(h, f32::round));
    let mut w_bar = align_i.max(to_multiple(w, f32::round));
    // The reference multiplies ints; the budgets are ints converted to f32 where divided.
    let area = i64::from(width) * i64::from(height);
    if (h_bar * w_bar) as u64 > max_pixels {
        let beta = (area as f32 / max_pixels as f32).sqrt();
        h_bar = align_i.max(to_multiple(h / beta, f32::floor));
        w_bar = align_i.max(to_multiple(w / beta, f32::floor));
    } else if ((h_bar * w_bar) as u64) < min_pixels {
        let beta = (min_pixels as f32 / area as f32).sqrt();
        h_bar = to_multiple(h * beta, f32::ceil);
        w_bar = to_multiple(w * beta, f32::ceil);
    }
    (w_bar.max(0) as u32, h_bar.max(0) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen_budget(align: u32) -> (u64, u64) {
        let area = u64::from(align) * u64::from(align);
        (8 * area, 4096 * area)
    }

    #[test]
    fn fixture_sizes() {
        let (min, max) = qwen_budget(28);
        assert_eq!(size_within_pixel_budget(333, 241, 28, min, max), (336, 252));
        assert_eq!(size_within_pixel_budget(250, 180, 28, min, max), (252, 168));
        // 2x2 is below 8 tokens: scaled up to 3x3 tokens (HF would give 2x2).
        assert_eq!(size_within_pixel_budget(2, 2, 28, min, max), (84, 84));
        let (min, max) = qwen_budget(32);
        assert_eq!(size_within_pixel_budget(333, 241, 32, min, max), (320, 256));
        assert_eq!(size_within_pixel_budget(250, 180, 32, min, max), (256, 192));
        assert_eq!(size_within_pixel_budget(2, 2, 32, min, max), (96, 96));
    }

    #[test]
    fn large_images_are_capped() {
        let (min, max) = qwen_budget(28);
        let (w, h) = size_within_pixel_budget(4000, 3000, 28, min, max);
        assert_eq!((w % 28, h % 28), (0, 0));
        assert!(u64::from(w) * u64::from(h) <= max);
        // Extreme aspect ratios still give at least one aligned block per side.
        let (w, h) = size_within_pixel_budget(16384, 1, 28, min, max);
        assert!(w >= 28 && h >= 28);
    }
}
