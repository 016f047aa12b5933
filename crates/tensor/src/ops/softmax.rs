//! Softmax over the last dimension, ggml `soft_max_ext` style: `softmax(x * scale + mask)`.
//!
//! The mask (additive, usually 0 / -inf) broadcasts numpy-style over `x` (e.g. one
//! `[n_q, n_kv]` mask for every head of a `[n_head, n_q, n_kv]` score tensor). A row whose
//! entries are all -inf has no distribution and comes out as zeros.

use crate::ops::elementwise::broadcast_shape;
use crate::{Result, Tensor, TensorError, cpu};

/// The scalar definition every backend is tested against: in-place softmax of each row of
/// `cols` (exp and sum in f64).
pub fn reference(x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        let e: Vec<f64> = row.iter().map(|&v| ((v - max) as f64).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (o, v) in row.iter_mut().zip(e) {
            *o = (v / sum) as f32;
        }
    }
}

/// `softmax(x * scale + mask)` over the last dimension; f32 result of `x`'s shape.
pub fn softmax(x: &Tensor, mask: Option<&Tensor>, scale: f32) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::softmax(x, mask, scale));
    let cols = match x.shape().last() {
        Some(&c) if c > 0 => c,
        _ => {
            return Err(TensorError::ShapeMismatch {
                op: "softmax",
                detail: format!("no rows in shape {:?}", x.shape()),
            });
        }
    };
    let mut v = x.to_f32_vec()?;
    if scale != 1.0 {
        cpu::scale(&mut v, scale);
    }
    if let Some(mask) = mask {
        if broadcast_shape(x.shape(), mask.shape()).as_deref() != Some(x.shape()) {
            return Err(TensorError::ShapeMismatch {
                op: "softmax",
                detail: format!(
                    "mask {:?} does not broadcast to {:?}",
                    mask.shape(),
                    x.shape()
                ),
            });
        }
        let m = crate::ops::elementwise::add(&Tensor::from_f32(x.shape(), &v)?, mask)?;
        v = m.to_f32_vec()?;
    }
    cpu::softmax_rows(&mut v, cols);
    Tensor::from_f32(x.shape(), &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_scaled_softmax() {
        let x = Tensor::from_f32(&[2, 1, 3], &[1., 2., 3., 0., 0., 0.]).unwrap();
        let mask = Tensor::from_f32(&[1, 3], &[0., 0., f32::NEG_INFINITY]).unwrap();
        let y = softmax(&x, Some(&mask), 2.0).unwrap().to_f32_vec().unwrap();
        let e = (2.0f32).exp();
        assert!((y[0] - 1.0 / (1.0 + e)).abs() < 1e-6);
        assert!((y[1] - e / (1.0 + e)).abs() < 1e-6);
        assert_eq!(y[2], 0.0);
        assert!((y[3] - 0.5).abs() < 1e-6 && y[5] == 0.0);
        let all_masked = Tensor::from_f32(&[1, 3], &[f32::NEG_INFINITY; 3]).unwrap();
        let y = softmax(&x, Some(&all_masked), 1.0)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        assert!(y.iter().all(|&v| v == 0.0));
        let bad = Tensor::from_f32(&[2], &[0.; 2]).unwrap();
        assert!(softmax(&x, Some(&bad), 1.0).is_err());
    }
}
