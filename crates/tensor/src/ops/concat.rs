//! Concatenation along one dimension (ggml `concat`).
//!
//! Contract: all parts share dtype, rank and every size except `dim`; the output's size along
//! `dim` is the sum, and element `[.., i, ..]` comes from the part covering `i` there.

use crate::{HostBytes, Result, Storage, Tensor, TensorError};

fn bad(detail: String) -> TensorError {
    TensorError::ShapeMismatch {
        op: "concat",
        detail,
    }
}

/// Concatenates `parts` along `dim`. Any dtype: host tensors are joined byte-wise (quantized
/// rows stay whole blocks), others go through f32.
pub fn concat(parts: &[&Tensor], dim: usize) -> Result<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| bad("no tensors to concatenate".into()))?;
    let rank = first.rank();
    if dim >= rank {
        return Err(bad(format!("dim {dim} of rank-{rank} tensors")));
    }
    for t in parts {
        let same_outside =
            t.rank() == rank && (0..rank).all(|i| i == dim || t.shape()[i] == first.shape()[i]);
        if !same_outside || t.dtype() != first.dtype() {
            return Err(bad(format!(
                "{} {:?} does not match {} {:?} outside dim {dim}",
                t.dtype(),
                t.shape(),
                first.dtype(),
                first.shape()
            )));
        }
    }
    let mut shape = first.shape().to_vec();
    shape[dim] = parts.iter().map(|t| t.shape()[dim]).sum();

    if parts.iter().all(|t| t.storage().host_bytes().is_some()) {
        let dtype = first.dtype();
        let owned: Vec<Tensor> = parts
            .iter()
            .map(|t| t.contiguous())
            .collect::<Result<_>>()?;
        // Shapes in bytes: the innermost size becomes its row's byte length.
        let byte_shapes: Vec<Vec<usize>> = owned
            .iter()
            .map(|t| {
                let mut s = t.shape().to_vec();
                s[rank - 1] = s[rank - 1] / dtype.block_size() * dtype.type_size();
                s
            })
            .collect();
        let inputs: Vec<(&[u8], &[usize])> = owned
            .iter()
            .zip(&byte_shapes)
            .map(|(t, s)| Ok((t.host_bytes()?, s.as_slice())))
            .collect::<Result<_>>()?;
        let total: usize = inputs.iter().map(|(b, _)| b.len()).sum();
        let mut out = HostBytes::zeroed(total);
        crate::cpu::concat::concat(&inputs, dim, out.make_mut());
        return Tensor::new(dtype, &shape, Storage::Host(out));
    }

    let data: Vec<Vec<f32>> = parts
        .iter()
        .map(|t| t.to_f32_vec())
        .collect::<Result<_>>()?;
    let inputs: Vec<(&[f32], &[usize])> = data
        .iter()
        .zip(parts)
        .map(|(d, t)| (d.as_slice(), t.shape()))
        .collect();
    let mut out = vec![0f32; shape.iter().product()];
    crate::cpu::concat::concat(&inputs, dim, &mut out);
    Tensor::from_f32(&shape, &out)
}

/// Scalar reference: element by element through multi-indices.
pub fn reference(parts: &[(&[f32], &[usize])], dim: usize) -> Vec<f32> {
    let Some(&(_, first)) = parts.first() else {
        return Vec::new();
    };
    let mut shape = first.to_vec();
    shape[dim] = parts.iter().map(|(_, s)| s[dim]).sum();
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel);
    for flat in 0..numel {
        // Multi-index of `flat` in the output.
        let mut idx = vec![0; shape.len()];
        let mut rest = flat;
        for d in (0..shape.len()).rev() {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        let mut i = idx[dim];
        for (data, s) in parts {
            if i < s[dim] {
                idx[dim] = i;
                let pos = idx
                    .iter()
                    .zip(s.iter())
                    .fold(0, |acc, (&x, &n)| acc * n + x);
                out.push(data[pos]);
                break;
            }
            i -= s[dim];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;

    #[test]
    fn concat_every_dim_matches_reference() {
        let a: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let b: Vec<f32> = (100..112).map(|v| v as f32).collect();
        for (dim, bs) in [(0, [1, 3, 4]), (1, [2, 1, 4]), (2, [2, 3, 2])] {
            let b = &b[..bs.iter().product()];
            let ta = Tensor::from_f32(&[2, 3, 4], &a).unwrap();
            let tb = Tensor::from_f32(&bs, b).unwrap();
            let got = concat(&[&ta, &tb], dim).unwrap();
            let want = reference(&[(&a, &[2, 3, 4]), (b, &bs)], dim);
            assert_eq!(got.to_f32_vec().unwrap(), want, "dim {dim}");
        }
    }

    #[test]
    fn concat_checks_shapes_and_keeps_dtype() {
        let a = Tensor::zeros(DType::F16, &[2, 4]).unwrap();
        let b = Tensor::zeros(DType::F16, &[3, 4]).unwrap();
        let c = concat(&[&a, &b], 0).unwrap();
        assert_eq!((c.dtype(), c.shape()), (DType::F16, &[5, 4][..]));
        assert!(concat(&[&a, &b], 1).is_err());
        let f = Tensor::zeros(DType::F32, &[3, 4]).unwrap();
        assert!(concat(&[&a, &f], 0).is_err());
        assert!(concat(&[], 0).is_err());
    }
}
