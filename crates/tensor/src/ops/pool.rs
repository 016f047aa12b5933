//! Pooling over `[C, H, W]` (2-D) or `[R, L]` (1-D) tensors.
//!
//! Contract (ggml `pool_2d`): `out[c, y, x]` = max or sum over the window cells
//! `in[c, y·sy - py + ky, x·sx - px + kx]` that are inside the input; the 2-D average divides
//! the sum by the full `kh·kw`. ggml `pool_1d`'s average divides by the cells inside.

use crate::{Result, Tensor, TensorError};

// ---------------------------------------------------------------- contract

/// Average or maximum over the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Avg,
    Max,
}

/// Window, stride and padding of a 2-D pool, `[y, x]` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Pool2dParams {
    /// Square `k × k` window, stride `s`, no padding.
    pub fn new(k: usize, s: usize) -> Self {
        Self {
            kernel: [k, k],
            stride: [s, s],
            padding: [0, 0],
        }
    }

    /// Output `[OH, OW]` for an `h × w` input, `None` if the window does not fit.
    pub fn out_size(&self, h: usize, w: usize) -> Option<[usize; 2]> {
        let axis = |n: usize, k: usize, s: usize, p: usize| {
            if s == 0 || k == 0 {
                return None;
            }
            (n + 2 * p).checked_sub(k).map(|r| r / s + 1)
        };
        Some([
            axis(h, self.kernel[0], self.stride[0], self.padding[0])?,
            axis(w, self.kernel[1], self.stride[1], self.padding[1])?,
        ])
    }
}

// ---------------------------------------------------------------- op and reference

fn bad(detail: String) -> TensorError {
    TensorError::ShapeMismatch { op: "pool", detail }
}

/// 2-D pooling of a `[C, H, W]` tensor into `[C, OH, OW]` f32.
pub fn pool2d(x: &Tensor, kind: PoolKind, p: &Pool2dParams) -> Result<Tensor> {
    let &[c, h, w] = x.shape() else {
        return Err(bad(format!(
            "pool2d input must be [C, H, W], got {:?}",
            x.shape()
        )));
    };
    let [oh, ow] = p
        .out_size(h, w)
        .ok_or_else(|| bad(format!("window {p:?} does not fit {h}x{w}")))?;
    let mut out = vec![0f32; c * oh * ow];
    crate::cpu::pool::pool2d(kind, &x.to_f32_vec()?, [c, h, w], p, &mut out);
    Tensor::from_f32(&[c, oh, ow], &out)
}

/// Average pooling with a `k × k` window and stride `s`.
pub fn avg_pool2d(x: &Tensor, k: usize, s: usize) -> Result<Tensor> {
    pool2d(x, PoolKind::Avg, &Pool2dParams::new(k, s))
}

/// 1-D pooling of every row of an `[R, L]` tensor.
pub fn pool1d(x: &Tensor, kind: PoolKind, k: usize, s: usize, pad: usize) -> Result<Tensor> {
    let &[rows, l] = x.shape() else {
        return Err(bad(format!(
            "pool1d input must be [R, L], got {:?}",
            x.shape()
        )));
    };
    let lo = (l + 2 * pad)
        .checked_sub(k)
        .filter(|_| k > 0 && s > 0)
        .map(|r| r / s + 1)
        .ok_or_else(|| bad(format!("window {k} stride {s} does not fit length {l}")))?;
    let mut out = vec![0f32; rows * lo];
    crate::cpu::pool::pool1d(kind, &x.to_f32_vec()?, [rows, l], k, s, pad, &mut out);
    Tensor::from_f32(&[rows, lo], &out)
}

/// Scalar references: plain loops every backend is tested against.
pub mod reference {
    use super::{Pool2dParams, PoolKind};

    /// Scalar reference of [`super::pool2d`] on slices.
    pub fn pool2d(kind: PoolKind, x: &[f32], [c, h, w]: [usize; 3], p: &Pool2dParams) -> Vec<f32> {
        let Some([oh, ow]) = p.out_size(h, w) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(c * oh * ow);
        for ci in 0..c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = if kind == PoolKind::Avg {
                        0.0
                    } else {
                        -f32::MAX
                    };
                    for ky in 0..p.kernel[0] {
                        for kx in 0..p.kernel[1] {
                            let y = (oy * p.stride[0] + ky) as isize - p.padding[0] as isize;
                            let xx = (ox * p.stride[1] + kx) as isize - p.padding[1] as isize;
                            if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                continue;
                            }
                            let v = x[(ci * h + y as usize) * w + xx as usize];
                            acc = if kind == PoolKind::Avg {
                                acc + v
                            } else {
                                acc.max(v)
                            };
                        }
                    }
                    out.push(if kind == PoolKind::Avg {
                        acc / (p.kernel[0] * p.kernel[1]) as f32
                    } else {
                        acc
                    });
                }
            }
        }
        out
    }

    /// Scalar reference of [`super::pool1d`] on slices: rows `[rows, l]`.
    pub fn pool1d(
        kind: PoolKind,
        x: &[f32],
        [rows, l]: [usize; 2],
        k: usize,
        s: usize,
        pad: usize,
    ) -> Vec<f32> {
        let Some(lo) = (l + 2 * pad).checked_sub(k).map(|r| r / s + 1) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(rows * lo);
        for r in 0..rows {
            for o in 0..lo {
                let (mut acc, mut count) = (
                    if kind == PoolKind::Avg {
                        0.0
                    } else {
                        -f32::MAX
                    },
                    0,
                );
                for ki in 0..k {
                    let j = (o * s + ki) as isize - pad as isize;
                    if j < 0 || j >= l as isize {
                        continue;
                    }
                    let v = x[r * l + j as usize];
                    acc = if kind == PoolKind::Avg {
                        acc + v
                    } else {
                        acc.max(v)
                    };
                    count += 1;
                }
                out.push(match kind {
                    PoolKind::Avg if count == 0 => 0.0,
                    PoolKind::Avg => acc / count as f32,
                    PoolKind::Max => acc,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_pool_matches_reference() {
        let (c, h, w) = (3, 7, 9);
        let x: Vec<f32> = (0..c * h * w).map(|v| (v as f32 * 0.37).sin()).collect();
        let t = Tensor::from_f32(&[c, h, w], &x).unwrap();
        for kind in [PoolKind::Avg, PoolKind::Max] {
            for p in [
                Pool2dParams::new(2, 2),
                Pool2dParams::new(3, 1),
                Pool2dParams {
                    padding: [1, 2],
                    ..Pool2dParams::new(3, 2)
                },
            ] {
                let got = pool2d(&t, kind, &p).unwrap();
                assert_eq!(
                    got.as_f32().unwrap(),
                    reference::pool2d(kind, &x, [c, h, w], &p)
                );
            }
        }
        assert!(avg_pool2d(&t, 8, 1).is_err());
        assert!(pool1d(&t, PoolKind::Avg, 2, 2, 0).is_err());
    }
}
