//! Materialised permutations: `x.permute(perm)` copied into a contiguous tensor.
//!
//! Contract: `out.shape[i] = x.shape[perm[i]]` and `out[i_0, .., i_n] = x[j]` with
//! `j[perm[k]] = i_k`; the reference is `Tensor::permute` + `Tensor::contiguous` (an
//! element-at-a-time gather). The fast path copies whole rows when the innermost dimension
//! stays innermost, and 32×32 tiles otherwise (so both sides of a transpose stay in cache).

use rayon::prelude::*;

use crate::{DType, HostBytes, Result, Storage, Tensor, TensorError};

/// Side of the square tiles used when the innermost dimension moves.
const TILE: usize = 32;

/// `x.permute(perm)` as a new contiguous host tensor.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    // Every dimension exactly once (checked here too: the fast path indexes with it).
    let mut sorted = perm.to_vec();
    sorted.sort_unstable();
    if !sorted.iter().copied().eq(0..x.rank()) {
        return Err(TensorError::InvalidView(format!(
            "permutation {perm:?} of a rank-{} tensor",
            x.rank()
        )));
    }
    // Refuses splitting quantized blocks with the view's own rules.
    let view = x.permute(perm)?;
    if view.is_contiguous() {
        return view.contiguous();
    }
    let dtype = x.dtype();
    let elem = match dtype {
        d if d.is_quantized() => return view.contiguous(),
        DType::F32 | DType::I32 => 4,
        DType::F16 | DType::BF16 | DType::I16 => 2,
        DType::I8 => 1,
        DType::F64 | DType::I64 => 8,
        _ => return view.contiguous(),
    };
    if x.storage().host_bytes().is_none() {
        return view.contiguous();
    }
    let base = x.contiguous()?;
    let src = base.host_bytes()?;
    let mut out = HostBytes::zeroed(src.len());
    let dst = out.make_mut();
    match elem {
        1 => permute_copy::<u8>(src, x.shape(), perm, dst),
        2 => permute_copy::<[u8; 2]>(src, x.shape(), perm, dst),
        4 => permute_copy::<[u8; 4]>(src, x.shape(), perm, dst),
        _ => permute_copy::<[u8; 8]>(src, x.shape(), perm, dst),
    }
    Tensor::new(dtype, view.shape(), Storage::Host(out))
}

/// Swaps dimensions `a` and `b` and makes the result contiguous.
pub fn transpose(x: &Tensor, a: usize, b: usize) -> Result<Tensor> {
    if a >= x.rank() || b >= x.rank() {
        return Err(TensorError::InvalidView(format!(
            "transpose of dims {a} and {b} of a rank-{} tensor",
            x.rank()
        )));
    }
    let mut perm: Vec<usize> = (0..x.rank()).collect();
    perm.swap(a, b);
    permute(x, &perm)
}

/// Scalar reference of the 2-D transpose of a row-major `[rows, cols]` slice (`perm = [1, 0]`):
/// `out[j * rows + i] = src[i * cols + j]`.
pub fn reference_2d(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(src.len(), rows * cols, "transpose: length");
    let mut out = vec![0f32; src.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = src[i * cols + j];
        }
    }
    out
}

/// The reference: the view and the generic element gather.
pub fn reference(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    x.permute(perm)?.contiguous()
}

/// Row-major strides of `shape`.
fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element offset in the source of output position `outer` over the output dims `dims`.
fn source_offset(mut flat: usize, out_shape: &[usize], src_strides: &[usize]) -> usize {
    let mut off = 0;
    for d in (0..out_shape.len()).rev() {
        off += (flat % out_shape[d]) * src_strides[d];
        flat /= out_shape[d];
    }
    off
}

/// Copies the elements (`T` = one element's bytes) of a contiguous `src` of `shape` into
/// `dst` in the order of `perm`.
fn permute_copy<T: bytemuck::Pod + Send + Sync>(
    src: &[u8],
    shape: &[usize],
    perm: &[usize],
    dst: &mut [u8],
) {
    let src: &[T] = bytemuck::cast_slice(src);
    let dst: &mut [T] = bytemuck::cast_slice_mut(dst);
    let rank = shape.len();
    if rank == 0 || src.is_empty() {
        dst.copy_from_slice(src);
        return;
    }
    let in_strides = strides_of(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let s: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();

    let row = out_shape[rank - 1];
    if s[rank - 1] == 1 {
        // Innermost dimension kept: whole rows move.
        dst.par_chunks_mut(row)
            .enumerate()
            .with_min_len(64)
            .for_each(|(r, out)| {
                let off = source_offset(r, &out_shape[..rank - 1], &s[..rank - 1]);
                out.copy_from_slice(&src[off..off + row]);
            });
        return;
    }
    // Tiles over the last two output dims (a rank-1 permutation is the identity, handled
    // above). Parallel over (outer index, band of TILE rows of the second-to-last dim).
    let (a_len, sa, sb) = (out_shape[rank - 2], s[rank - 2], s[rank - 1]);
    let plane = a_len * row;
    dst.par_chunks_mut(plane)
        .enumerate()
        .flat_map_iter(|(o, out)| {
            let base = source_offset(o, &out_shape[..rank - 2], &s[..rank - 2]);
            out.chunks_mut(TILE * row)
                .enumerate()
                .map(move |(band, rows)| (base, band, rows))
        })
        .for_each(|(base, band, rows)| {
            let a0 = band * TILE;
            let na = rows.len() / row;
            for b0 in (0..row).step_by(TILE) {
                let nb = TILE.min(row - b0);
                for b in b0..b0 + nb {
                    for a in 0..na {
                        rows[a * row + b] = src[base + (a0 + a) * sa + b * sb];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permutation_of_rank_3_matches_reference() {
        let shape = [3, 35, 37];
        let data: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|v| v as f32)
            .collect();
        let x = Tensor::from_f32(&shape, &data).unwrap();
        for perm in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let got = permute(&x, &perm).unwrap();
            let want = reference(&x, &perm).unwrap();
            assert_eq!(got.shape(), want.shape());
            assert_eq!(got.as_f32().unwrap(), want.as_f32().unwrap(), "{perm:?}");
        }
        let t = transpose(&x, 0, 2).unwrap();
        assert_eq!(t.shape(), &[37, 35, 3]);
        assert!(transpose(&x, 0, 3).is_err());
        assert!(permute(&x, &[0, 0, 1]).is_err());
    }

    #[test]
    fn f16_views_and_rank_4() {
        let shape = [2, 3, 4, 5];
        let bytes: Vec<u8> = (0..120u16)
            .flat_map(|v| half::f16::from_f32(v as f32).to_le_bytes())
            .collect();
        let x = Tensor::new(
            DType::F16,
            &shape,
            Storage::Host(HostBytes::from_bytes(&bytes)),
        )
        .unwrap();
        let x = x.narrow(1, 1, 2).unwrap();
        for perm in [[3, 2, 1, 0], [0, 2, 1, 3], [1, 3, 0, 2]] {
            let got = permute(&x, &perm).unwrap();
            let want = reference(&x, &perm).unwrap();
            assert_eq!(
                got.to_f32_vec().unwrap(),
                want.to_f32_vec().unwrap(),
                "{perm:?}"
            );
        }
    }
}
