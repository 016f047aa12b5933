//! `matmul`: `y[.., m] = x[.., k] · w[m, k]ᵀ`, ggml's `mul_mat` with the weight as first
//! operand. `w` may be any dtype (f32 / f16 / bf16 / quantized); x and y are f32.

use crate::{Result, Tensor, TensorError, cpu};

/// The scalar definition every backend is tested against: `out[i, j] = sum_p x[i, p] *
/// w[j, p]` for f32 `w` `[m, k]` and `x` `[n, k]`, summed in f64.
pub fn reference(w: &[f32], x: &[f32], n: usize, k: usize, m: usize, out: &mut [f32]) {
    for i in 0..n {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..m {
            let wr = &w[j * k..(j + 1) * k];
            out[i * m + j] = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32;
        }
    }
}

/// `x [.., k]` times `w [m, k]` transposed: f32 `[.., m]`.
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    super::try_gpu!(w, crate::gpu::ops::matmul(x, w));
    let k = x.shape().last().copied().unwrap_or(1);
    if w.rank() != 2 || w.dim(-1) != k {
        return Err(TensorError::ShapeMismatch {
            op: "matmul",
            detail: format!(
                "x {:?} times weight {:?} (expected [m, {k}])",
                x.shape(),
                w.shape()
            ),
        });
    }
    let m = w.dim(0);
    let xv = x.to_f32_vec()?;
    let n = xv.len().checked_div(k).unwrap_or(0);
    let mut out = vec![0f32; n * m];
    cpu::matmul(w, &xv, n, &mut out)?;
    let mut shape = x.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = m;
    }
    Tensor::from_f32(&shape, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_matmul_and_shape_errors() {
        let w = Tensor::from_f32(&[3, 2], &[1., 0., 0., 1., 1., 1.]).unwrap();
        let x = Tensor::from_f32(&[2, 2], &[2., 3., 4., 5.]).unwrap();
        let y = matmul(&x, &w).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_f32().unwrap(), &[2., 3., 5., 4., 5., 9.]);
        let bad = Tensor::from_f32(&[2, 3], &[0.; 6]).unwrap();
        assert!(matmul(&x, &bad).is_err());
    }
}
