//! 2-D / 1-D convolution (no bias; add it with `add_rows`).
//!
//! Contract (ggml `conv_2d` / `conv_1d`): input `[in_c, H, W]`, weight `[out_c, in_c, kh, kw]`,
//! `out[o, y, x] = Σ_{c, ky, kx} w[o, c, ky, kx] · in[c, y·sy + ky·dy - py, x·sx + kx·dx - px]`
//! with out-of-range input reading 0; output `[out_c, OH, OW]`, sizes from
//! [`Conv2dParams::out_size`]. 1-D is the same with `H = kh = 1`.

use crate::{Result, Tensor, TensorError};

// ---------------------------------------------------------------- contract

/// Stride, padding and dilation of a 2-D convolution, `[y, x]` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
}

impl Conv2dParams {
    /// Non-overlapping `p × p` patches (ViT patch embedding): stride `p`, no padding.
    pub fn patch(p: usize) -> Self {
        Self {
            stride: [p, p],
            padding: [0, 0],
            dilation: [1, 1],
        }
    }

    /// Stride and padding on both axes, no dilation.
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride: [stride, stride],
            padding: [padding, padding],
            dilation: [1, 1],
        }
    }

    /// Output `[OH, OW]` for an `h × w` input and a `kh × kw` kernel, `None` when the kernel
    /// does not fit or a stride/dilation is zero.
    pub fn out_size(&self, h: usize, w: usize, kh: usize, kw: usize) -> Option<[usize; 2]> {
        Some([
            out_len(h, kh, self.stride[0], self.padding[0], self.dilation[0])?,
            out_len(w, kw, self.stride[1], self.padding[1], self.dilation[1])?,
        ])
    }
}

/// Stride, padding and dilation of a 1-D convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv1dParams {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
}

impl Conv1dParams {
    pub fn new(stride: usize, padding: usize) -> Self {
        Self {
            stride,
            padding,
            dilation: 1,
        }
    }

    pub(crate) fn as_2d(&self) -> Conv2dParams {
        Conv2dParams {
            stride: [1, self.stride],
            padding: [0, self.padding],
            dilation: [1, self.dilation],
        }
    }
}

/// One axis of ggml's output size formula.
pub fn out_len(
    input: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dilation: usize,
) -> Option<usize> {
    if stride == 0 || dilation == 0 || k == 0 {
        return None;
    }
    let span = dilation * (k - 1) + 1;
    (input + 2 * pad).checked_sub(span).map(|r| r / stride + 1)
}

// ---------------------------------------------------------------- op and reference

fn input_dims<const N: usize>(x: &Tensor, what: &str) -> Result<[usize; N]> {
    x.shape()
        .try_into()
        .map_err(|_| TensorError::ShapeMismatch {
            op: "conv",
            detail: format!("{what} input must have rank {N}, got {:?}", x.shape()),
        })
}

/// `[in_c, H, W]` -> `[out_c, OH, OW]`.
pub fn conv2d(x: &Tensor, weight: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    let chw = input_dims::<3>(x, "conv2d")?;
    let [oh, ow] = out_hw(chw, weight, p)?;
    let oc = weight.dim(0);
    let mut out = vec![0f32; oc * oh * ow];
    crate::cpu::conv::conv2d(&x.to_f32_vec()?, chw, weight, p, &mut out)?;
    Tensor::from_f32(&[oc, oh, ow], &out)
}

/// `[in_c, H, W]` -> `[OH·OW, out_c]` (token-major, what a patch embedding wants).
pub fn conv2d_tokens(x: &Tensor, weight: &Tensor, p: &Conv2dParams) -> Result<Tensor> {
    let chw = input_dims::<3>(x, "conv2d")?;
    let [oh, ow] = out_hw(chw, weight, p)?;
    let oc = weight.dim(0);
    let mut out = vec![0f32; oc * oh * ow];
    crate::cpu::conv::conv2d_tokens(&x.to_f32_vec()?, chw, weight, p, &mut out)?;
    Tensor::from_f32(&[oh * ow, oc], &out)
}

/// `[in_c, L]` -> `[out_c, L_out]`.
pub fn conv1d(x: &Tensor, weight: &Tensor, p: &Conv1dParams) -> Result<Tensor> {
    let [c, l] = input_dims::<2>(x, "conv1d")?;
    let &[oc, _, k] = weight.shape() else {
        return Err(TensorError::ShapeMismatch {
            op: "conv1d",
            detail: format!("weight must be [out_c, in_c, k], got {:?}", weight.shape()),
        });
    };
    let lo = out_len(l, k, p.stride, p.padding, p.dilation).ok_or_else(|| {
        TensorError::ShapeMismatch {
            op: "conv1d",
            detail: format!("kernel {k} with {p:?} does not fit length {l}"),
        }
    })?;
    let mut out = vec![0f32; oc * lo];
    crate::cpu::conv::conv1d(&x.to_f32_vec()?, [c, l], weight, p, &mut out)?;
    Tensor::from_f32(&[oc, lo], &out)
}

fn out_hw([_, h, w]: [usize; 3], weight: &Tensor, p: &Conv2dParams) -> Result<[usize; 2]> {
    let &[_, _, kh, kw] = weight.shape() else {
        return Err(TensorError::ShapeMismatch {
            op: "conv2d",
            detail: format!(
                "weight must be [out_c, in_c, kh, kw], got {:?}",
                weight.shape()
            ),
        });
    };
    p.out_size(h, w, kh, kw)
        .ok_or_else(|| TensorError::ShapeMismatch {
            op: "conv2d",
            detail: format!("kernel {kh}x{kw} with {p:?} does not fit a {h}x{w} input"),
        })
}

/// Scalar references: plain loops every backend is tested against.
pub mod reference {
    use super::{Conv1dParams, Conv2dParams};

    /// Scalar reference: the direct sum, `w` as f32 `[out_c, in_c, kh, kw]`; returns
    /// `[out_c, OH, OW]`.
    pub fn conv2d(
        x: &[f32],
        [c, h, w]: [usize; 3],
        wt: &[f32],
        [oc, kh, kw]: [usize; 3],
        p: &Conv2dParams,
    ) -> Vec<f32> {
        let Some([oh, ow]) = p.out_size(h, w, kh, kw) else {
            return Vec::new();
        };
        let mut out = vec![0f32; oc * oh * ow];
        for o in 0..oc {
            for y in 0..oh {
                for xo in 0..ow {
                    let mut sum = 0f64;
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y * p.stride[0] + ky * p.dilation[0]) as isize
                                    - p.padding[0] as isize;
                                let ix = (xo * p.stride[1] + kx * p.dilation[1]) as isize
                                    - p.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let v = x[(ci * h + iy as usize) * w + ix as usize];
                                sum += v as f64 * wt[((o * c + ci) * kh + ky) * kw + kx] as f64;
                            }
                        }
                    }
                    out[(o * oh + y) * ow + xo] = sum as f32;
                }
            }
        }
        out
    }

    /// Scalar reference of the 1-D convolution: `x` `[c, l]`, `wt` `[oc, c, k]`; returns
    /// `[out_c, L_out]`.
    pub fn conv1d(
        x: &[f32],
        [c, l]: [usize; 2],
        wt: &[f32],
        [oc, k]: [usize; 2],
        p: &Conv1dParams,
    ) -> Vec<f32> {
        let p2 = Conv2dParams {
            stride: [1, p.stride],
            padding: [0, p.padding],
            dilation: [1, p.dilation],
        };
        conv2d(x, [c, 1, l], wt, [oc, 1, k], &p2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whisper_style_conv1d_matches_reference() {
        let (c, l, oc, k) = (3, 11, 4, 3);
        let x: Vec<f32> = (0..c * l).map(|v| (v as f32 * 0.3).sin()).collect();
        let wt: Vec<f32> = (0..oc * c * k).map(|v| (v as f32 * 0.7).cos()).collect();
        for stride in [1, 2] {
            let p = Conv1dParams::new(stride, 1);
            let xt = Tensor::from_f32(&[c, l], &x).unwrap();
            let wt_t = Tensor::from_f32(&[oc, c, k], &wt).unwrap();
            let got = conv1d(&xt, &wt_t, &p).unwrap();
            let want = reference::conv1d(&x, [c, l], &wt, [oc, k], &p);
            assert_eq!(got.shape(), &[oc, if stride == 1 { 11 } else { 6 }]);
            for (a, b) in got.as_f32().unwrap().iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn out_len_matches_ggml() {
        assert_eq!(out_len(224, 14, 14, 0, 1), Some(16));
        assert_eq!(out_len(3000, 3, 1, 1, 1), Some(3000));
        assert_eq!(out_len(3000, 3, 2, 1, 1), Some(1500));
        assert_eq!(out_len(5, 3, 1, 0, 2), Some(1));
        assert_eq!(out_len(2, 3, 1, 0, 1), None);
        assert_eq!(out_len(2, 3, 0, 0, 1), None);
    }
}
