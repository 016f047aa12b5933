//! Binary elementwise ops with numpy broadcasting (`add`, `mul`) and `scale`.
//!
//! Shapes are aligned at their last dimension; each pair of sizes must be equal or one of
//! them 1. The result has the larger size in every dimension (ggml's `add`/`mul` are the
//! case where `b` repeats over `a`).

use crate::{Result, Tensor, TensorError, cpu};

/// The scalar definitions every backend is tested against.
pub mod reference {
    use super::*;

    /// `a += b`.
    pub fn add(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x += y;
        }
    }
    /// `a *= b`.
    pub fn mul(a: &mut [f32], b: &[f32]) {
        for (x, &y) in a.iter_mut().zip(b) {
            *x *= y;
        }
    }
    /// `a *= s`.
    pub fn scale(a: &mut [f32], s: f32) {
        for x in a.iter_mut() {
            *x *= s;
        }
    }

    /// `op(a, b)` with numpy broadcasting: `(result shape, result)`; `None` if the shapes
    /// do not broadcast.
    pub fn broadcast(
        op: fn(f32, f32) -> f32,
        a_shape: &[usize],
        a: &[f32],
        b_shape: &[usize],
        b: &[f32],
    ) -> Option<(Vec<usize>, Vec<f32>)> {
        let shape = broadcast_shape(a_shape, b_shape)?;
        let a = expand(a_shape, a, &shape);
        let b = expand(b_shape, b, &shape);
        Some((shape, a.iter().zip(&b).map(|(&x, &y)| op(x, y)).collect()))
    }
}

/// The numpy broadcast of two shapes, or `None` when some dimension pair is neither equal
/// nor 1.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() < rank {
            1
        } else {
            s[i + s.len() - rank]
        }
    };
    (0..rank)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Some(x),
            (1, y) => Some(y),
            (x, 1) => Some(x),
            _ => None,
        })
        .collect()
}

/// Repeats contiguous `data` of shape `src` up to the broadcast shape `dst`.
fn expand(src: &[usize], data: &[f32], dst: &[usize]) -> Vec<f32> {
    if src.iter().product::<usize>() == dst.iter().product::<usize>() {
        return data.to_vec();
    }
    let rank = dst.len();
    let pad = rank - src.len();
    // Element strides of `src` seen with `dst`'s rank; 0 where it repeats.
    let mut strides = vec![0usize; rank];
    let mut acc = 1;
    for i in (0..src.len()).rev() {
        strides[i + pad] = if src[i] == 1 { 0 } else { acc };
        acc *= src[i];
    }
    let total: usize = dst.iter().product();
    let mut out = Vec::with_capacity(total);
    let mut idx = vec![0usize; rank];
    for _ in 0..total {
        out.push(data[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()]);
        for d in (0..rank).rev() {
            idx[d] += 1;
            if idx[d] < dst[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// If `b` broadcast to `shape` is one row repeated (its non-1 dims are a suffix of
/// `shape`), the length of that row.
fn repeated_row(b: &[usize], shape: &[usize]) -> Option<usize> {
    let inner: Vec<usize> = b.iter().copied().skip_while(|&d| d == 1).collect();
    let tail = shape.get(shape.len().checked_sub(inner.len())?..)?;
    (tail == inner.as_slice()).then(|| inner.iter().product())
}

#[derive(Clone, Copy)]
enum Bin {
    Add,
    Mul,
}

fn binary(op: Bin, name: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape =
        broadcast_shape(a.shape(), b.shape()).ok_or_else(|| TensorError::ShapeMismatch {
            op: name,
            detail: format!("{:?} and {:?} do not broadcast", a.shape(), b.shape()),
        })?;
    let av = a.to_f32_vec()?;
    let bv = b.to_f32_vec()?;
    let mut out = expand(a.shape(), &av, &shape);
    match repeated_row(b.shape(), &shape) {
        Some(cols) if cols > 0 && cols == bv.len() => match op {
            Bin::Add => cpu::add_rows(&mut out, &bv),
            Bin::Mul => cpu::mul_rows(&mut out, &bv),
        },
        _ => {
            let bx = expand(b.shape(), &bv, &shape);
            match op {
                Bin::Add => cpu::add(&mut out, &bx),
                Bin::Mul => cpu::mul(&mut out, &bx),
            }
        }
    }
    Tensor::from_f32(&shape, &out)
}

/// `a + b` with numpy broadcasting; f32 result.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::try_gpu!(a, crate::gpu::ops::add(a, b));
    binary(Bin::Add, "add", a, b)
}

/// `a * b` with numpy broadcasting; f32 result.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    super::try_gpu!(a, crate::gpu::ops::mul(a, b));
    binary(Bin::Mul, "mul", a, b)
}

/// `a * s`; f32 result.
pub fn scale(a: &Tensor, s: f32) -> Result<Tensor> {
    let mut v = a.to_f32_vec()?;
    cpu::scale(&mut v, s);
    Tensor::from_f32(a.shape(), &v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_shapes_follow_numpy() {
        assert_eq!(broadcast_shape(&[2, 3], &[3]), Some(vec![2, 3]));
        assert_eq!(broadcast_shape(&[2, 1, 4], &[3, 1]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast_shape(&[2, 3], &[2]), None);
        assert_eq!(repeated_row(&[1, 3], &[2, 3]), Some(3));
        assert_eq!(repeated_row(&[2, 1], &[2, 3]), None);
    }

    #[test]
    fn add_and_mul_broadcast() {
        let a = Tensor::from_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let row = Tensor::from_f32(&[3], &[10., 20., 30.]).unwrap();
        let col = Tensor::from_f32(&[2, 1], &[2., 3.]).unwrap();
        let y = add(&a, &row).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[11., 22., 33., 14., 25., 36.]);
        let y = mul(&a, &col).unwrap();
        assert_eq!(y.as_f32().unwrap(), &[2., 4., 6., 12., 15., 18.]);
        // The broadcast grows `a` too.
        let y = add(&col, &row).unwrap();
        assert_eq!(y.shape(), &[2, 3]);
        assert_eq!(y.as_f32().unwrap(), &[12., 22., 32., 13., 23., 33.]);
        let (s, r) =
            reference::broadcast(|x, y| x + y, &[2, 1], &[2., 3.], &[3], &[10., 20., 30.]).unwrap();
        assert_eq!((s, r), (vec![2, 3], vec![12., 22., 32., 13., 23., 33.]));
        assert!(add(&a, &col.reshape(&[1, 2]).unwrap()).is_err());
        assert_eq!(scale(&a, 2.0).unwrap().as_f32().unwrap()[5], 12.0);
    }
}
