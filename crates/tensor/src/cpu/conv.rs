//! 2-D and 1-D convolutions as im2col + [`matmul`](super::matmul) (weights in f32, f16, bf16
//! or a quantized type), the way ggml lowers `conv_2d` / `conv_1d`.
//!
//! Layouts are row-major, outermost first: input `[in_c, H, W]` (or `[in_c, L]`), weight
//! `[out_c, in_c, kh, kw]` (or `[out_c, in_c, k]`), output `[out_c, OH, OW]`. The `_tokens`
//! variants write `[OH·OW, out_c]` instead, which is what the GEMM produces and what a ViT
//! patch embedding or Whisper's encoder consumes next, so they skip a transpose.
//! Output size per axis (ggml): `(in + 2·pad - dilation·(k - 1) - 1) / stride + 1`.

use rayon::prelude::*;

/// Kept at its old path for callers (clip's Gemma 3 projector); the kernel is [`super::transpose`].
pub use super::transpose::transpose;
pub use crate::ops::conv::{Conv1dParams, Conv2dParams, out_len};
use crate::{Result, Tensor, TensorError};

fn mismatch(detail: String) -> TensorError {
    TensorError::ShapeMismatch {
        op: "conv2d",
        detail,
    }
}

/// im2col of output positions `first..first + rows.len() / (c·kh·kw)`: row `p` holds the
/// input values under the kernel at output position `p`, ordered `[c, ky, kx]` like a weight
/// row; padding reads as 0.
pub fn im2col_2d(
    input: &[f32],
    [c, h, w]: [usize; 3],
    [kh, kw]: [usize; 2],
    p: &Conv2dParams,
    ow: usize,
    first: usize,
    rows: &mut [f32],
) {
    let row_len = c * kh * kw;
    assert_eq!(input.len(), c * h * w, "im2col: input length");
    if row_len == 0 {
        return;
    }
    rows.par_chunks_mut(row_len)
        .enumerate()
        .with_min_len(16)
        .for_each(|(i, row)| {
            let (oy, ox) = ((first + i) / ow, (first + i) % ow);
            for ci in 0..c {
                let plane = &input[ci * h * w..(ci + 1) * h * w];
                for ky in 0..kh {
                    let iy =
                        (oy * p.stride[0] + ky * p.dilation[0]) as isize - p.padding[0] as isize;
                    let dst = &mut row[(ci * kh + ky) * kw..(ci * kh + ky + 1) * kw];
                    if iy < 0 || iy >= h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &plane[iy as usize * w..(iy as usize + 1) * w];
                    let x0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
                    if p.dilation[1] == 1 && x0 >= 0 && x0 as usize + kw <= w {
                        dst.copy_from_slice(&src[x0 as usize..x0 as usize + kw]);
                        continue;
                    }
                    for (kx, d) in dst.iter_mut().enumerate() {
                        let ix = x0 + (kx * p.dilation[1]) as isize;
                        *d = if ix < 0 || ix >= w as isize {
                            0.0
                        } else {
                            src[ix as usize]
                        };
                    }
                }
            }
        });
}

/// im2col buffers stay under this many floats (64 MiB); larger outputs go in chunks.
const IM2COL_MAX: usize = 1 << 24;

/// Checks shapes and returns (out_c, kh, kw, [OH, OW], weight viewed as `[out_c, in_c·kh·kw]`).
fn prepare(
    input_len: usize,
    [c, h, w]: [usize; 3],
    weight: &Tensor,
    p: &Conv2dParams,
) -> Result<(usize, [usize; 2], [usize; 2], Tensor)> {
    let &[oc, wc, kh, kw] = weight.shape() else {
        return Err(mismatch(format!(
            "weight must be [out_c, in_c, kh, kw], got {:?}",
            weight.shape()
        )));
    };
    if wc != c || input_len != c * h * w {
        return Err(mismatch(format!(
            "input of {input_len} values as [{c}, {h}, {w}] against weight {:?}",
            weight.shape()
        )));
    }
    let out = p.out_size(h, w, kh, kw).ok_or_else(|| {
        mismatch(format!(
            "kernel {kh}x{kw} with {p:?} does not fit a {h}x{w} input"
        ))
    })?;
    let w2 = weight.contiguous()?.reshape(&[oc, c * kh * kw])?;
    Ok((oc, [kh, kw], out, w2))
}

/// Convolution writing `[OH·OW, out_c]` (token-major).
pub fn conv2d_tokens(
    input: &[f32],
    chw: [usize; 3],
    weight: &Tensor,
    p: &Conv2dParams,
    out: &mut [f32],
) -> Result<()> {
    let (oc, k, [oh, ow], w2) = prepare(input.len(), chw, weight, p)?;
    if out.len() != oh * ow * oc {
        return Err(mismatch(format!(
            "output holds {} values, [{oh}x{ow}, {oc}] needs {}",
            out.len(),
            oh * ow * oc
        )));
    }
    let row_len = chw[0] * k[0] * k[1];
    let chunk = (IM2COL_MAX / row_len.max(1)).max(1);
    let mut cols = vec![0f32; chunk.min(oh * ow) * row_len];
    for first in (0..oh * ow).step_by(chunk) {
        let n = chunk.min(oh * ow - first);
        let cols = &mut cols[..n * row_len];
        im2col_2d(input, chw, k, p, ow, first, cols);
        super::matmul(&w2, cols, n, &mut out[first * oc..(first + n) * oc])?;
    }
    Ok(())
}

/// Convolution writing `[out_c, OH, OW]` (ggml's layout).
pub fn conv2d(
    input: &[f32],
    chw: [usize; 3],
    weight: &Tensor,
    p: &Conv2dParams,
    out: &mut [f32],
) -> Result<()> {
    let oc = weight.shape().first().copied().unwrap_or(0);
    let mut tokens = vec![0f32; out.len()];
    conv2d_tokens(input, chw, weight, p, &mut tokens)?;
    transpose(&tokens, out.len() / oc.max(1), oc, out);
    Ok(())
}

/// 1-D convolution writing `[L_out, out_c]`: input `[in_c, L]`, weight `[out_c, in_c, k]`.
pub fn conv1d_tokens(
    input: &[f32],
    [c, l]: [usize; 2],
    weight: &Tensor,
    p: &Conv1dParams,
    out: &mut [f32],
) -> Result<()> {
    let &[oc, wc, k] = weight.shape() else {
        return Err(mismatch(format!(
            "conv1d weight must be [out_c, in_c, k], got {:?}",
            weight.shape()
        )));
    };
    let w4 = weight.contiguous()?.reshape(&[oc, wc, 1, k])?;
    conv2d_tokens(input, [c, 1, l], &w4, &p.as_2d(), out)
}

/// 1-D convolution writing `[out_c, L_out]` (ggml's layout).
pub fn conv1d(
    input: &[f32],
    cl: [usize; 2],
    weight: &Tensor,
    p: &Conv1dParams,
    out: &mut [f32],
) -> Result<()> {
    let oc = weight.shape().first().copied().unwrap_or(0);
    let mut tokens = vec![0f32; out.len()];
    conv1d_tokens(input, cl, weight, p, &mut tokens)?;
    transpose(&tokens, out.len() / oc.max(1), oc, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_embedding_of_a_tiny_image() {
        // 1 channel 2x4 image, 2x2 patches, 1 output channel with all-one weights -> patch sums.
        let x = [1., 2., 3., 4., 5., 6., 7., 8.];
        let w = Tensor::from_f32(&[1, 1, 2, 2], &[1.; 4]).unwrap();
        let mut out = [0f32; 2];
        conv2d(&x, [1, 2, 4], &w, &Conv2dParams::patch(2), &mut out).unwrap();
        assert_eq!(out, [1. + 2. + 5. + 6., 3. + 4. + 7. + 8.]);
        let mut bad = [0f32; 3];
        assert!(conv2d(&x, [1, 2, 4], &w, &Conv2dParams::patch(2), &mut bad).is_err());
        assert!(conv2d(&x, [2, 2, 2], &w, &Conv2dParams::patch(2), &mut out).is_err());
    }
}
