//! The resize filters llama.cpp's mtmd uses, reproduced to the last rounding step: the pixels must match
//! its `inp_raw` within 1e-5 after normalization, i.e. the 8-bit results must be identical. Written from
//! the description of Pillow's `ImagingResample` (filter support, centre, fixed-point rounding).

use crate::bitmap::Bitmap;

/// Which filter a strategy resizes with. All three are Pillow's separable resampling (as llama.cpp 0c1e570
/// implements it): pixel-centre aligned, kernel widened by the scale when downscaling (anti-aliasing),
/// weights in 22-bit fixed point, a horizontal then a vertical pass, each rounded to 8 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeFilter {
    /// Triangle kernel, support 1 (Pillow `BILINEAR`; Gemma 3).
    Bilinear,
    /// Cubic kernel a = -0.5, support 2 (Pillow `BICUBIC`; Qwen-VL).
    Bicubic,
    /// Lanczos kernel a = 3, `sinc(x)·sinc(x/3)` on [-3, 3), support 3 (Pillow `LANCZOS`; Idefics3).
    Lanczos,
}

/// Resizes to exactly `width` x `height`, ignoring the aspect ratio.
pub fn resize(src: &Bitmap, width: u32, height: u32, filter: ResizeFilter) -> Bitmap {
    if src.width == width && src.height == height {
        return src.clone();
    }
    match filter {
        ResizeFilter::Bilinear => resize_pillow(src, width, height, PillowKernel::Triangle),
        ResizeFilter::Bicubic => resize_pillow(src, width, height, PillowKernel::Bicubic),
        ResizeFilter::Lanczos => resize_pillow(src, width, height, PillowKernel::Lanczos),
    }
}

/// Scales `src` to fit inside `width` x `height` keeping its aspect ratio, each side rounded up (llama.cpp's
/// PAD_CEIL), and centres it on a canvas filled with `pad` (offsets rounded down).
pub fn resize_fit_padded(
    src: &Bitmap,
    width: u32,
    height: u32,
    filter: ResizeFilter,
    pad: [u8; 3],
) -> Bitmap {
    if src.width == width && src.height == height {
        return src.clone();
    }
    // f32 throughout, as the reference computes it: the rounding decides the inner size.
    let scale = (width as f32 / src.width as f32).min(height as f32 / src.height as f32);
    let inner_w = ((src.width as f32 * scale).ceil() as u32).clamp(1, width);
    let inner_h = ((src.height as f32 * scale).ceil() as u32).clamp(1, height);
    let inner = resize(src, inner_w, inner_h, filter);

    let mut rgb = Vec::with_capacity(3 * width as usize * height as usize);
    for _ in 0..width as usize * height as usize {
        rgb.extend_from_slice(&pad);
    }
    let off_x = ((width - inner_w) / 2) as usize;
    let off_y = ((height - inner_h) / 2) as usize;
    let row_bytes = 3 * inner_w as usize;
    for y in 0..inner_h as usize {
        let src_row = &inner.rgb[y * row_bytes..(y + 1) * row_bytes];
        let dst_start = 3 * ((y + off_y) * width as usize + off_x);
        rgb[dst_start..dst_start + row_bytes].copy_from_slice(src_row);
    }
    Bitmap::derived(width, height, rgb)
}

/// Fixed-point fraction bits of Pillow's resampling weights.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's bicubic kernel with a = -0.5.
fn bicubic_kernel(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// `sin(πx) / (πx)`, 1 at 0.
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        px.sin() / px
    }
}

/// Pillow's Lanczos-3 kernel: the half-open window [-3, 3) as Pillow tests it.
fn lanczos_kernel(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// For each output index: the first input index and the fixed-point weights of its input window.
struct Taps {
    starts: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

#[derive(Clone, Copy)]
enum PillowKernel {
    Bicubic,
    Triangle,
    Lanczos,
}

impl PillowKernel {
    fn support(self) -> f64 {
        match self {
            PillowKernel::Bicubic => 2.0,
            PillowKernel::Triangle => 1.0,
            PillowKernel::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        match self {
            PillowKernel::Bicubic => bicubic_kernel(x),
            PillowKernel::Triangle => (1.0 - x.abs()).max(0.0),
            PillowKernel::Lanczos => lanczos_kernel(x),
        }
    }
}

fn pillow_taps(in_size: usize, out_size: usize, kernel: PillowKernel) -> Taps {
    let support_unscaled = kernel.support();
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the kernel (anti-aliasing); upscaling keeps it at its natural width.
    let filter_scale = scale.max(1.0);
    let support = support_unscaled * filter_scale;
    let inv_filter_scale = 1.0 / filter_scale;
    let mut starts = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for out in 0..out_size {
        let center = (out as f64 + 0.5) * scale;
        // Truncating casts as in the reference; both are clamped into [0, in_size].
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).clamp(0, in_size as i64) as usize;
        let hi = hi.max(lo);
        let raw: Vec<f64> = (lo..hi)
            .map(|i| kernel.weight((i as f64 - center + 0.5) * inv_filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                // Round half away from zero, then truncate: Pillow's conversion to fixed point.
                (if scaled < 0.0 {
                    scaled - 0.5
                } else {
                    scaled + 0.5
                }) as i32
            })
            .collect();
        starts.push(lo);
        weights.push(fixed);
    }
    Taps { starts, weights }
}

fn clip8(accumulated: i64) -> u8 {
    (accumulated >> PRECISION_BITS).clamp(0, 255) as u8
}

fn resize_pillow(src: &Bitmap, width: u32, height: u32, kernel: PillowKernel) -> Bitmap {
    // Horizontal pass first, then vertical, each rounding to 8 bits, skipping a pass whose size is unchanged.
    let horizontal = if width != src.width {
        let taps = pillow_taps(src.width as usize, width as usize, kernel);
        let (sw, w) = (src.width as usize, width as usize);
        let mut rgb = vec![0u8; 3 * w * src.height as usize];
        for y in 0..src.height as usize {
            let row = &src.rgb[3 * y * sw..3 * (y + 1) * sw];
            for x in 0..w {
                let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
                for (k, &wt) in taps.weights[x].iter().enumerate() {
                    let p = 3 * (taps.starts[x] + k);
                    for c in 0..3 {
                        acc[c] += i64::from(row[p + c]) * i64::from(wt);
                    }
                }
                for c in 0..3 {
                    rgb[3 * (y * w + x) + c] = clip8(acc[c]);
                }
            }
        }
        Bitmap::derived(width, src.height, rgb)
    } else {
        src.clone()
    };
    if height == horizontal.height {
        return horizontal;
    }
    let taps = pillow_taps(horizontal.height as usize, height as usize, kernel);
    let w = width as usize;
    let mut rgb = vec![0u8; 3 * w * height as usize];
    for y in 0..height as usize {
        for x in 0..w {
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (k, &wt) in taps.weights[y].iter().enumerate() {
                let p = 3 * ((taps.starts[y] + k) * w + x);
                for c in 0..3 {
                    acc[c] += i64::from(horizontal.rgb[p + c]) * i64::from(wt);
                }
            }
            for c in 0..3 {
                rgb[3 * (y * w + x) + c] = clip8(acc[c]);
            }
        }
    }
    Bitmap::derived(width, height, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Bitmap {
        let rgb = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 255 / w.max(2)) as u8, (y * 255 / h.max(2)) as u8, 128]
            })
            .collect();
        Bitmap::from_rgb(w, h, rgb).unwrap()
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = Bitmap::from_rgb(5, 3, [10u8, 200, 33].repeat(15)).unwrap();
        for filter in [
            ResizeFilter::Bilinear,
            ResizeFilter::Bicubic,
            ResizeFilter::Lanczos,
        ] {
            for (w, h) in [(11, 7), (2, 2), (5, 9), (1, 1)] {
                let out = resize(&src, w, h, filter);
                assert_eq!((out.width, out.height), (w, h));
                assert!(
                    out.rgb.chunks(3).all(|p| p == [10, 200, 33]),
                    "{filter:?} {w}x{h}"
                );
            }
        }
    }

    #[test]
    fn pillow_weights_sum_to_one() {
        for kernel in [PillowKernel::Bicubic, PillowKernel::Lanczos] {
            for (i, o) in [(333, 336), (241, 244), (2, 84), (1000, 7), (186, 192)] {
                let taps = pillow_taps(i, o, kernel);
                for w in &taps.weights {
                    let sum: i64 = w.iter().map(|&v| i64::from(v)).sum();
                    assert!(
                        (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                        "{i}->{o}: {sum}"
                    );
                }
            }
        }
    }

    #[test]
    fn padded_resize_centres_the_image() {
        // 333x241 into 336x252: the width fills, the height becomes ceil(241 * 336/333) = 244, centred at 4.
        let src = gradient(333, 241);
        let out = resize_fit_padded(&src, 336, 252, ResizeFilter::Bicubic, [0, 0, 0]);
        assert_eq!((out.width, out.height), (336, 252));
        let row_is_black = |y: u32| (0..336).all(|x| out.pixel(x, y) == [0, 0, 0]);
        assert!((0..4).all(row_is_black));
        assert!((248..252).all(row_is_black));
        assert!(!row_is_black(4) && !row_is_black(247));
    }

    #[test]
    fn one_pixel_sides_do_not_panic() {
        let src = gradient(1, 4);
        for filter in [
            ResizeFilter::Bilinear,
            ResizeFilter::Bicubic,
            ResizeFilter::Lanczos,
        ] {
            let out = resize(&src, 3, 3, filter);
            assert_eq!(out.rgb.len(), 27);
        }
    }

    #[test]
    fn bilinear_upscale_is_flat_before_the_first_pixel_centre() {
        // Pixel-centre alignment: 2 -> 112 maps outputs 0..27 before source centre 0, so they copy it.
        let src = Bitmap::from_rgb(2, 1, vec![172, 0, 0, 202, 0, 0]).unwrap();
        let out = resize(&src, 112, 1, ResizeFilter::Bilinear);
        assert!((0..28).all(|x| out.pixel(x, 0)[0] == 172));
        assert!((84..112).all(|x| out.pixel(x, 0)[0] == 202));
        assert_eq!(out.pixel(56, 0)[0], 187);
    }

    #[test]
    fn lanczos_matches_hand_computed_pillow_values() {
        // 2 -> 4 upscale (scale 1/2, support 3, no widening). Output centres 0.25, 0.75, 1.25,
        // 1.75 in source pixels; the taps are the two source pixels at distances (0.25, 1.25)
        // or (0.75, 0.25) and mirrored. L(0.25) = 0.890067, L(1.25) = -0.132871,
        // L(0.75) = 0.270190, so the normalized weights are (1.175480, -0.175480) and
        // (0.232875, 0.767125): the outer outputs overshoot, which Lanczos does and
        // the triangle filter never does.
        let src = Bitmap::from_rgb(2, 1, vec![100, 0, 255, 200, 255, 0]).unwrap();
        let out = resize(&src, 4, 1, ResizeFilter::Lanczos);
        let channel = |c: usize| (0..4).map(|x| out.pixel(x, 0)[c]).collect::<Vec<_>>();
        // 100·1.17548 - 200·0.17548 = 82.45; 100·0.767125 + 200·0.232875 = 123.29; ...
        assert_eq!(channel(0), [82, 123, 177, 218]);
        // 0 -> 255: -44.7 clamps to 0, 59.38, 195.62, 299.7 clamps to 255.
        assert_eq!(channel(1), [0, 59, 196, 255]);
        assert_eq!(channel(2), [255, 196, 59, 0]);
        // Vertical pass: the same numbers down a column.
        let col = Bitmap::from_rgb(1, 2, vec![100, 0, 255, 200, 255, 0]).unwrap();
        let out = resize(&col, 1, 4, ResizeFilter::Lanczos);
        assert_eq!(
            (0..4).map(|y| out.pixel(0, y)[0]).collect::<Vec<_>>(),
            [82, 123, 177, 218]
        );
    }

    #[test]
    fn lanczos_window_is_half_open() {
        assert_eq!(lanczos_kernel(3.0), 0.0);
        assert!(lanczos_kernel(-3.0).abs() < 1e-15);
        assert_eq!(lanczos_kernel(0.0), 1.0);
        assert!((lanczos_kernel(0.25) - 0.890067).abs() < 1e-6);
        assert!((lanczos_kernel(1.25) + 0.132871).abs() < 1e-6);
        // Integer distances are the zeros of sinc.
        assert!(lanczos_kernel(1.0).abs() < 1e-15 && lanczos_kernel(2.0).abs() < 1e-15);
    }
}
