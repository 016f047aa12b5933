//! Row normalizations over the last dimension.
//!
//! RMS norm (ggml `rms_norm` then `mul`): `y = x / sqrt(mean(x^2) + eps) * w`.
//! Layer norm (ggml `norm` then `mul`, `add`): `y = (x - mean) / sqrt(var + eps) * w + b`,
//! `var` the biased variance. Sums are taken in f64 (as ggml does); the per-element scale
//! is applied in f32 in ggml's order.

use crate::{Result, Tensor, TensorError, cpu};

/// The scalar definitions every backend is tested against.
pub mod reference {
    /// RMS norm of each row of `cols` of `x` into `out`.
    pub fn rms_norm(x: &[f32], w: Option<&[f32]>, eps: f32, cols: usize, out: &mut [f32]) {
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let sum: f64 = xr.iter().map(|&v| v as f64 * v as f64).sum();
            let mean = (sum / cols as f64) as f32;
            let k = 1.0 / (mean + eps).sqrt();
            for (j, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
                *o = v * k * w.map_or(1.0, |w| w[j]);
            }
        }
    }

    /// Layer norm of each row of `cols` of `x` into `out`.
    pub fn layer_norm(
        x: &[f32],
        w: Option<&[f32]>,
        b: Option<&[f32]>,
        eps: f32,
        cols: usize,
        out: &mut [f32],
    ) {
        for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let sum: f64 = xr.iter().map(|&v| v as f64).sum();
            let mean = (sum / cols as f64) as f32;
            let sq: f64 = xr.iter().map(|&v| ((v - mean) as f64).powi(2)).sum();
            let var = (sq / cols as f64) as f32;
            let k = 1.0 / (var + eps).sqrt();
            for (j, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
                *o = (v - mean) * k * w.map_or(1.0, |w| w[j]) + b.map_or(0.0, |b| b[j]);
            }
        }
    }
}

/// Checks that an optional per-column parameter has `cols` elements and reads it.
fn param(
    op: &'static str,
    what: &str,
    p: Option<&Tensor>,
    cols: usize,
) -> Result<Option<Vec<f32>>> {
    let Some(p) = p else { return Ok(None) };
    if p.numel() != cols {
        return Err(TensorError::ShapeMismatch {
            op,
            detail: format!(
                "{what} has shape {:?}, rows have {cols} elements",
                p.shape()
            ),
        });
    }
    p.to_f32_vec().map(Some)
}

fn rows_of(op: &'static str, x: &Tensor) -> Result<usize> {
    match x.shape().last() {
        Some(&c) if c > 0 => Ok(c),
        _ => Err(TensorError::ShapeMismatch {
            op,
            detail: format!("cannot normalize rows of shape {:?}", x.shape()),
        }),
    }
}

/// RMS norm over the last dimension; f32 result of `x`'s shape.
pub fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::rms_norm(x, w, eps));
    let cols = rows_of("rms_norm", x)?;
    let w = param("rms_norm", "weight", w, cols)?;
    let xv = x.to_f32_vec()?;
    let mut out = vec![0f32; xv.len()];
    cpu::rms_norm(&xv, w.as_deref(), eps, cols, &mut out);
    Tensor::from_f32(x.shape(), &out)
}

/// Layer norm over the last dimension; f32 result of `x`'s shape.
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let cols = rows_of("layer_norm", x)?;
    let w = param("layer_norm", "weight", w, cols)?;
    let b = param("layer_norm", "bias", b, cols)?;
    let xv = x.to_f32_vec()?;
    let mut out = vec![0f32; xv.len()];
    cpu::layer_norm(&xv, w.as_deref(), b.as_deref(), eps, cols, &mut out);
    Tensor::from_f32(x.shape(), &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_and_layer_norm_small_cases() {
        let x = Tensor::from_f32(&[1, 2], &[3.0, 4.0]).unwrap();
        let y = rms_norm(&x, None, 0.0).unwrap().to_f32_vec().unwrap();
        let k = (12.5f32).sqrt();
        assert!((y[0] - 3.0 / k).abs() < 1e-6 && (y[1] - 4.0 / k).abs() < 1e-6);
        let w = Tensor::from_f32(&[2], &[2.0, 1.0]).unwrap();
        let b = Tensor::from_f32(&[2], &[0.5, 0.5]).unwrap();
        let y = layer_norm(&x, Some(&w), Some(&b), 0.0)
            .unwrap()
            .to_f32_vec()
            .unwrap();
        assert!((y[0] - (-2.0 + 0.5)).abs() < 1e-6 && (y[1] - 1.5).abs() < 1e-6);
        let bad = Tensor::from_f32(&[3], &[1.0; 3]).unwrap();
        assert!(rms_norm(&x, Some(&bad), 1e-6).is_err());
    }
}
