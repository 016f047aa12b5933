//! Resizing `[C, H, W]` planes the way `ggml_interpolate` does (nearest, bilinear with or
//! without antialiasing, bicubic with `a = -0.75`).
//!
//! The scale factors are `sf = out / in` per axis (f32). Without `align_corners` output pixel
//! `i` samples source coordinate `(i + 0.5) / sf - 0.5` (half-pixel centres, PyTorch's
//! `align_corners=False`); with it the offset is 0 and `sf = (out - 1) / (in - 1)` when both
//! sizes exceed 1. Source indices are clamped to the border.

use rayon::prelude::*;

pub use crate::ops::interp::InterpMode;

/// Scale factor and pixel offset of one axis.
#[derive(Clone, Copy)]
struct Axis {
    sf: f32,
    offset: f32,
    n_in: usize,
}

impl Axis {
    fn new(n_in: usize, n_out: usize, align_corners: bool) -> Self {
        let mut sf = n_out as f32 / n_in as f32;
        let mut offset = 0.5;
        if align_corners {
            offset = 0.0;
            if n_out > 1 && n_in > 1 {
                sf = (n_out - 1) as f32 / (n_in - 1) as f32;
            }
        }
        Self { sf, offset, n_in }
    }

    fn clamp(&self, i: i64) -> usize {
        i.clamp(0, self.n_in as i64 - 1) as usize
    }

    /// Source coordinate of output index `i` for the interpolating filters.
    fn source(&self, i: usize) -> f32 {
        (i as f32 + self.offset) / self.sf - self.offset
    }
}

/// Per output index: the source indices and weights the filter combines (at most 4 taps for
/// bilinear/bicubic, more for the antialiased filter).
#[derive(Clone, Default)]
struct Taps {
    index: Vec<usize>,
    weight: Vec<f32>,
}

fn taps(mode: InterpMode, ax: Axis, n_out: usize) -> Vec<Taps> {
    (0..n_out)
        .map(|i| match mode {
            InterpMode::Nearest => Taps {
                index: vec![ax.clamp((i as f32 / ax.sf) as i64)],
                weight: vec![1.0],
            },
            InterpMode::Bilinear => {
                let s = ax.source(i);
                let lo = ax.clamp(s.floor() as i64);
                let hi = ax.clamp(s.floor() as i64 + 1);
                let d = (s - lo as f32).clamp(0.0, 1.0);
                Taps {
                    index: vec![lo, hi],
                    weight: vec![1.0 - d, d],
                }
            }
            InterpMode::Bicubic => {
                let s = ax.source(i);
                let base = s.floor();
                let d = s - base;
                let base = base as i64;
                Taps {
                    index: (-1..=2).map(|o| ax.clamp(base + o)).collect(),
                    weight: bicubic_weights(d).to_vec(),
                }
            }
            InterpMode::BilinearAntialias => {
                let centre = (i as f32 + ax.offset) / ax.sf;
                let support = (1.0 / ax.sf).max(1.0);
                let inv = 1.0 / support;
                // Truncation toward zero, as ggml's integer casts do.
                let lo = ((centre - support + ax.offset) as i64).max(0);
                let hi = ((centre + support + ax.offset) as i64).min(ax.n_in as i64);
                let mut t = Taps::default();
                for sx in lo..hi {
                    let w = (1.0 - ((sx as f32 - centre + ax.offset) * inv).abs()).max(0.0);
                    t.index.push(sx as usize);
                    t.weight.push(w);
                }
                t
            }
        })
        .collect()
}

/// ggml's cubic convolution weights (a = -0.75) for fractional offset `d` of taps -1..=2.
pub fn bicubic_weights(d: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(d + 1.0), near(d), near(1.0 - d), far(2.0 - d)]
}

/// Resizes `x` `[c, h, w]` into `out` `[c, oh, ow]`.
pub fn interpolate(
    mode: InterpMode,
    align_corners: bool,
    x: &[f32],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
    out: &mut [f32],
) {
    assert_eq!(x.len(), c * h * w, "interpolate: input length");
    assert_eq!(out.len(), c * oh * ow, "interpolate: output length");
    if out.is_empty() {
        return;
    }
    assert!(h > 0 && w > 0, "interpolate: empty input plane");
    let (ay, ax) = (
        Axis::new(h, oh, align_corners),
        Axis::new(w, ow, align_corners),
    );
    let (ty, tx) = (taps(mode, ay, oh), taps(mode, ax, ow));
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, plane)| {
            for (oy, row) in dst.chunks_exact_mut(ow).enumerate() {
                let ry = &ty[oy];
                for (ox, d) in row.iter_mut().enumerate() {
                    *d = sample(mode, plane, w, ry, &tx[ox]);
                }
            }
        });
}

/// One output pixel, combining taps in the same order as ggml.
fn sample(mode: InterpMode, plane: &[f32], w: usize, ty: &Taps, tx: &Taps) -> f32 {
    let at = |y: usize, x: usize| plane[y * w + x];
    match mode {
        InterpMode::Nearest => at(ty.index[0], tx.index[0]),
        InterpMode::Bilinear => {
            let (y0, y1, x0, x1) = (ty.index[0], ty.index[1], tx.index[0], tx.index[1]);
            let (dy, dx) = (ty.weight[1], tx.weight[1]);
            at(y0, x0) * (1.0 - dx) * (1.0 - dy)
                + at(y0, x1) * dx * (1.0 - dy)
                + at(y1, x0) * (1.0 - dx) * dy
                + at(y1, x1) * dx * dy
        }
        InterpMode::Bicubic => {
            let row = |y: usize| (0..4).fold(0.0, |acc, k| acc + at(y, tx.index[k]) * tx.weight[k]);
            (0..4).fold(0.0, |acc, k| acc + row(ty.index[k]) * ty.weight[k])
        }
        InterpMode::BilinearAntialias => {
            let (mut val, mut total) = (0.0f32, 0.0f32);
            for (&sy, &wy) in ty.index.iter().zip(&ty.weight) {
                for (&sx, &wx) in tx.index.iter().zip(&tx.weight) {
                    let wgt = wx * wy;
                    if wgt <= 0.0 {
                        continue;
                    }
                    val += at(sy, sx) * wgt;
                    total += wgt;
                }
            }
            if total > 0.0 { val / total } else { val }
        }
    }
}

/// Bilinear resize (ggml `GGML_SCALE_MODE_BILINEAR`, optional antialias flag).
pub fn interpolate_bilinear(
    x: &[f32],
    chw: [usize; 3],
    out_hw: [usize; 2],
    align_corners: bool,
    antialias: bool,
    out: &mut [f32],
) {
    let mode = if antialias {
        InterpMode::BilinearAntialias
    } else {
        InterpMode::Bilinear
    };
    interpolate(mode, align_corners, x, chw, out_hw, out);
}

/// Bicubic resize (ggml `GGML_SCALE_MODE_BICUBIC`, a = -0.75).
pub fn interpolate_bicubic(
    x: &[f32],
    chw: [usize; 3],
    out_hw: [usize; 2],
    align_corners: bool,
    out: &mut [f32],
) {
    interpolate(InterpMode::Bicubic, align_corners, x, chw, out_hw, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_weights_sum_to_one_and_interpolate() {
        for d in [0.0, 0.25, 0.5, 0.9] {
            let s: f32 = bicubic_weights(d).iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        assert_eq!(bicubic_weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn bilinear_doubles_like_pytorch() {
        // 1x2 -> 1x4, align_corners=False: sources -0.25, 0.25, 0.75, 1.25.
        let mut out = [0f32; 4];
        interpolate_bilinear(&[0.0, 1.0], [1, 1, 2], [1, 4], false, false, &mut out);
        assert_eq!(out, [0.0, 0.25, 0.75, 1.0]);
        interpolate_bilinear(&[0.0, 3.0], [1, 1, 2], [1, 4], true, false, &mut out);
        assert_eq!(out, [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn nearest_and_identity() {
        let x: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let mut out = vec![0f32; 6];
        for mode in [
            InterpMode::Nearest,
            InterpMode::Bilinear,
            InterpMode::Bicubic,
            InterpMode::BilinearAntialias,
        ] {
            interpolate(mode, false, &x, [1, 2, 3], [2, 3], &mut out);
            assert_eq!(out, x, "{mode:?} at scale 1");
        }
        let mut up = vec![0f32; 12];
        interpolate(InterpMode::Nearest, false, &x, [1, 2, 3], [2, 6], &mut up);
        assert_eq!(up, [0., 0., 1., 1., 2., 2., 3., 3., 4., 4., 5., 5.]);
    }

    #[test]
    fn antialias_downscale_averages() {
        // 1x4 -> 1x2 with antialias: triangle over support 2 centred at 1 and 3.
        let mut out = [0f32; 2];
        interpolate_bilinear(
            &[0.0, 1.0, 2.0, 3.0],
            [1, 1, 4],
            [1, 2],
            false,
            true,
            &mut out,
        );
        // Centre 1.0: taps 0..3 at distances (0.5-1, 1.5-1, 2.5-1)/2 -> weights .75,.75,.25.
        let want0 = (0.0 * 0.75 + 1.0 * 0.75 + 2.0 * 0.25) / 1.75;
        assert!((out[0] - want0).abs() < 1e-6, "{out:?}");
    }
}
