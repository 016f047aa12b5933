//! Resizing a `[C, H, W]` tensor (ggml `interpolate` / `upscale`).
//!
//! Contract (ggml `interpolate`): per axis `sf = out / in` (f32). Nearest reads source index
//! `floor(i / sf)`. The interpolating filters sample source coordinate
//! `(i + 0.5) / sf - 0.5` (offset 0 and `sf = (out-1)/(in-1)` with `align_corners` when both
//! sizes exceed 1), clamp source indices to the border; bicubic is Keys' cubic convolution
//! with `a = -0.75` over taps -1..=2; antialiased bilinear is a triangle filter of support
//! `max(1, 1/sf)` normalised by its total weight.

use crate::{Result, Tensor, TensorError};

/// Resampling filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterpMode {
    Nearest,
    Bilinear,
    /// Bilinear with a triangle filter widened to the downscale factor (PyTorch
    /// `antialias=True`); equals `Bilinear` when upscaling.
    BilinearAntialias,
    Bicubic,
}

/// Resizes `x` (`[C, H, W]`, any float dtype) to `[C, oh, ow]` f32.
pub fn interpolate(
    x: &Tensor,
    [oh, ow]: [usize; 2],
    mode: InterpMode,
    align_corners: bool,
) -> Result<Tensor> {
    let &[c, h, w] = x.shape() else {
        return Err(TensorError::ShapeMismatch {
            op: "interpolate",
            detail: format!("input must be [C, H, W], got {:?}", x.shape()),
        });
    };
    if (h == 0 || w == 0) && c * oh * ow > 0 {
        return Err(TensorError::ShapeMismatch {
            op: "interpolate",
            detail: format!("cannot resize an empty {h}x{w} plane to {oh}x{ow}"),
        });
    }
    let mut out = vec![0f32; c * oh * ow];
    crate::cpu::interp::interpolate(
        mode,
        align_corners,
        &x.to_f32_vec()?,
        [c, h, w],
        [oh, ow],
        &mut out,
    );
    Tensor::from_f32(&[c, oh, ow], &out)
}

/// Keys' cubic convolution kernel with `a = -0.75` at distance `t` from a tap, written from
/// its definition (the kernel module evaluates the same polynomials in another form):
/// `(a+2)|t|^3 - (a+3)|t|^2 + 1` for `|t| <= 1`, `a|t|^3 - 5a|t|^2 + 8a|t| - 4a` for
/// `1 < |t| < 2`, else 0.
fn keys_cubic(t: f32) -> f32 {
    const A: f32 = -0.75;
    let x = t.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (A + 2.0) * x3 - (A + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        A * x3 - 5.0 * A * x2 + 8.0 * A * x - 4.0 * A
    } else {
        0.0
    }
}

/// Scalar reference: every output pixel straight from the formulas.
pub fn reference(
    mode: InterpMode,
    align_corners: bool,
    x: &[f32],
    [c, h, w]: [usize; 3],
    [oh, ow]: [usize; 2],
) -> Vec<f32> {
    let (mut sf_y, mut sf_x) = (oh as f32 / h as f32, ow as f32 / w as f32);
    let mut off = 0.5f32;
    if align_corners {
        off = 0.0;
        if oh > 1 && h > 1 {
            sf_y = (oh - 1) as f32 / (h - 1) as f32;
        }
        if ow > 1 && w > 1 {
            sf_x = (ow - 1) as f32 / (w - 1) as f32;
        }
    }
    let px = |ci: usize, y: i64, xx: i64| {
        let y = y.clamp(0, h as i64 - 1) as usize;
        let xx = xx.clamp(0, w as i64 - 1) as usize;
        x[(ci * h + y) * w + xx]
    };
    let mut out = Vec::with_capacity(c * oh * ow);
    for ci in 0..c {
        for i1 in 0..oh {
            for i0 in 0..ow {
                let v = match mode {
                    InterpMode::Nearest => {
                        px(ci, (i1 as f32 / sf_y) as i64, (i0 as f32 / sf_x) as i64)
                    }
                    InterpMode::Bilinear => {
                        let y = (i1 as f32 + off) / sf_y - off;
                        let xx = (i0 as f32 + off) / sf_x - off;
                        let y0 = (y.floor() as i64).clamp(0, h as i64 - 1);
                        let x0 = (xx.floor() as i64).clamp(0, w as i64 - 1);
                        let dy = (y - y0 as f32).clamp(0.0, 1.0);
                        let dx = (xx - x0 as f32).clamp(0.0, 1.0);
                        let y1 = y.floor() as i64 + 1;
                        let x1 = xx.floor() as i64 + 1;
                        px(ci, y0, x0) * (1.0 - dx) * (1.0 - dy)
                            + px(ci, y0, x1) * dx * (1.0 - dy)
                            + px(ci, y1, x0) * (1.0 - dx) * dy
                            + px(ci, y1, x1) * dx * dy
                    }
                    InterpMode::Bicubic => {
                        let y = (i1 as f32 + off) / sf_y - off;
                        let xx = (i0 as f32 + off) / sf_x - off;
                        let (y0, x0) = (y.floor(), xx.floor());
                        let tap_weights =
                            |frac: f32| [-1.0, 0.0, 1.0, 2.0].map(|t| keys_cubic(frac - t));
                        let (wy, wx) = (tap_weights(y - y0), tap_weights(xx - x0));
                        let mut v = 0.0;
                        for (ky, wyk) in wy.iter().enumerate() {
                            let mut r = 0.0;
                            for (kx, wxk) in wx.iter().enumerate() {
                                r += px(ci, y0 as i64 + ky as i64 - 1, x0 as i64 + kx as i64 - 1)
                                    * wxk;
                            }
                            v += r * wyk;
                        }
                        v
                    }
                    InterpMode::BilinearAntialias => {
                        let y = (i1 as f32 + off) / sf_y;
                        let xx = (i0 as f32 + off) / sf_x;
                        let (sup_y, sup_x) = ((1.0 / sf_y).max(1.0), (1.0 / sf_x).max(1.0));
                        let tri = |d: f32| (1.0 - d.abs()).max(0.0);
                        let (mut val, mut total) = (0.0f32, 0.0f32);
                        let y_lo = ((y - sup_y + off) as i64).max(0);
                        let y_hi = ((y + sup_y + off) as i64).min(h as i64);
                        let x_lo = ((xx - sup_x + off) as i64).max(0);
                        let x_hi = ((xx + sup_x + off) as i64).min(w as i64);
                        for sy in y_lo..y_hi {
                            let wy = tri((sy as f32 - y + off) / sup_y);
                            for sx in x_lo..x_hi {
                                let wgt = tri((sx as f32 - xx + off) / sup_x) * wy;
                                if wgt > 0.0 {
                                    val += px(ci, sy, sx) * wgt;
                                    total += wgt;
                                }
                            }
                        }
                        if total > 0.0 { val / total } else { val }
                    }
                };
                out.push(v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_op_matches_reference() {
        let (c, h, w) = (2, 5, 7);
        let x: Vec<f32> = (0..c * h * w).map(|v| (v as f32 * 0.41).sin()).collect();
        let t = Tensor::from_f32(&[c, h, w], &x).unwrap();
        for mode in [
            InterpMode::Nearest,
            InterpMode::Bilinear,
            InterpMode::Bicubic,
            InterpMode::BilinearAntialias,
        ] {
            for ac in [false, true] {
                for size in [[9, 13], [3, 4], [5, 7], [1, 1]] {
                    let got = interpolate(&t, size, mode, ac).unwrap();
                    let want = reference(mode, ac, &x, [c, h, w], size);
                    for (a, b) in got.as_f32().unwrap().iter().zip(&want) {
                        assert!(
                            (a - b).abs() < 1e-5,
                            "{mode:?} ac={ac} {size:?}: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }
}
