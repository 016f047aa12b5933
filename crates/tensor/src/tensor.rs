use crate::storage::{HostBytes, Storage};
use crate::{DType, Result, TensorError};

/// An n-dimensional array over some [`Storage`].
///
/// `shape` is row-major, outermost dimension first (numpy order, the reverse of ggml's `ne`):
/// a GGUF weight with `ne = [in, out]` is a `Tensor` of shape `[out, in]`. `strides` and
/// `offset` count elements. For block-quantized dtypes the innermost dimension must be
/// contiguous and every row must start on a block boundary; views that would split a block
/// are refused.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
    storage: Storage,
}

fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Bytes needed for `numel` elements of `dtype`, if whole blocks.
fn bytes_for(dtype: DType, numel: usize) -> Option<usize> {
    let block = dtype.block_size();
    if !numel.is_multiple_of(block) {
        return None;
    }
    (numel / block).checked_mul(dtype.type_size())
}

impl Tensor {
    /// Wraps storage as a contiguous tensor, checking that it is large enough.
    pub fn new(dtype: DType, shape: &[usize], storage: Storage) -> Result<Self> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let needed = numel.and_then(|n| bytes_for(dtype, n));
        let Some(needed) = needed else {
            return Err(TensorError::PartialBlock {
                dtype,
                len: shape.last().copied().unwrap_or(1),
                block: dtype.block_size(),
            });
        };
        if let Some(&inner) = shape.last()
            && !inner.is_multiple_of(dtype.block_size())
        {
            return Err(TensorError::PartialBlock {
                dtype,
                len: inner,
                block: dtype.block_size(),
            });
        }
        if storage.len_bytes() < needed {
            return Err(TensorError::StorageTooSmall {
                dtype,
                shape: shape.to_vec(),
                needed,
                available: storage.len_bytes(),
            });
        }
        Ok(Self {
            dtype,
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
            storage,
        })
    }

    /// A weight borrowed in place from a memory map.
    pub fn from_mapped(dtype: DType, shape: &[usize], bytes: gguf::MappedBytes) -> Result<Self> {
        Self::new(dtype, shape, Storage::Mapped(bytes))
    }

    /// An f32 tensor copied from `data`.
    pub fn from_f32(shape: &[usize], data: &[f32]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(TensorError::ShapeMismatch {
                op: "from_f32",
                detail: format!(
                    "shape {shape:?} has {numel} elements, data has {}",
                    data.len()
                ),
            });
        }
        Self::new(DType::F32, shape, Storage::Host(HostBytes::from_f32(data)))
    }

    /// A zero-filled host tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        let bytes = bytes_for(dtype, numel).ok_or(TensorError::PartialBlock {
            dtype,
            len: numel,
            block: dtype.block_size(),
        })?;
        Self::new(dtype, shape, Storage::Host(HostBytes::zeroed(bytes)))
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }
    /// Size of dimension `i`, counted from the end when negative (`dim(-1)` is the row length).
    pub fn dim(&self, i: isize) -> usize {
        let idx = if i < 0 { self.rank() as isize + i } else { i };
        self.shape[idx as usize]
    }

    pub fn is_contiguous(&self) -> bool {
        self.strides == contiguous_strides(&self.shape)
    }

    /// Byte offset of element `elem` (which must start a block for quantized types).
    fn byte_offset(&self, elem: usize) -> usize {
        elem / self.dtype.block_size() * self.dtype.type_size()
    }

    /// The bytes of a contiguous host tensor, from its first element to its last.
    pub fn host_bytes(&self) -> Result<&[u8]> {
        if !self.is_contiguous() {
            return Err(TensorError::InvalidView(
                "host_bytes needs a contiguous tensor; call contiguous() first".into(),
            ));
        }
        let all = self.storage.host_bytes().ok_or(TensorError::Unsupported {
            op: "host_bytes",
            dtype: self.dtype,
            backend: "gpu",
        })?;
        let start = self.byte_offset(self.offset);
        let len = bytes_for(self.dtype, self.numel()).unwrap_or(0);
        Ok(&all[start..start + len])
    }

    /// The raw bytes of row `i` of a 2-D (or flattened) contiguous tensor: what a quantized
    /// matmul reads in place.
    pub fn row_bytes(&self, i: usize) -> Result<&[u8]> {
        let row = *self.shape.last().unwrap_or(&1);
        let bytes = self.host_bytes()?;
        let per_row = bytes_for(self.dtype, row).unwrap_or(0);
        bytes
            .get(i * per_row..(i + 1) * per_row)
            .ok_or_else(|| TensorError::InvalidView(format!("row {i} out of range")))
    }

    /// A contiguous f32 host tensor as a slice.
    pub fn as_f32(&self) -> Result<&[f32]> {
        if self.dtype != DType::F32 {
            return Err(TensorError::Unsupported {
                op: "as_f32",
                dtype: self.dtype,
                backend: self.storage.backend_name(),
            });
        }
        bytemuck::try_cast_slice(self.host_bytes()?)
            .map_err(|e| TensorError::InvalidView(format!("f32 view: {e}")))
    }

    /// Every element as f32 in row-major order (dequantizing, converting, gathering views).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        #[cfg(feature = "gpu")]
        if let Storage::Gpu(buf) = &self.storage {
            return buf.read_tensor_f32(self);
        }
        let t = self.contiguous()?;
        let mut out = vec![0f32; t.numel()];
        crate::quant::dequantize(t.dtype, t.host_bytes()?, &mut out)?;
        Ok(out)
    }

    /// Same data with a new shape; needs a contiguous tensor.
    pub fn reshape(&self, shape: &[usize]) -> Result<Self> {
        let numel: usize = shape.iter().product();
        if numel != self.numel() {
            return Err(TensorError::ShapeMismatch {
                op: "reshape",
                detail: format!("{:?} -> {shape:?}", self.shape),
            });
        }
        if !self.is_contiguous() {
            return Err(TensorError::InvalidView(
                "reshape of a non-contiguous view; call contiguous() first".into(),
            ));
        }
        if !shape
            .last()
            .copied()
            .unwrap_or(1)
            .is_multiple_of(self.dtype.block_size())
        {
            return Err(TensorError::PartialBlock {
                dtype: self.dtype,
                len: shape.last().copied().unwrap_or(1),
                block: self.dtype.block_size(),
            });
        }
        Ok(Self {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            ..self.clone()
        })
    }

    /// Reorders dimensions without copying: `out.shape[i] = self.shape[perm[i]]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.rank()];
        let valid = perm.len() == self.rank()
            && perm
                .iter()
                .all(|&p| p < self.rank() && !std::mem::replace(&mut seen[p], true));
        if !valid {
            return Err(TensorError::InvalidView(format!(
                "permutation {perm:?} of a rank-{} tensor",
                self.rank()
            )));
        }
        if self.dtype.is_quantized() && perm.last() != Some(&(self.rank() - 1)) {
            return Err(TensorError::InvalidView(format!(
                "{} rows cannot be permuted across blocks",
                self.dtype
            )));
        }
        Ok(Self {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            ..self.clone()
        })
    }

    /// Elements `start..start+len` of dimension `dim`, without copying.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        if dim >= self.rank() || start.checked_add(len).is_none_or(|e| e > self.shape[dim]) {
            return Err(TensorError::InvalidView(format!(
                "narrow dim {dim} [{start}, +{len}) of shape {:?}",
                self.shape
            )));
        }
        let offset = self.offset + start * self.strides[dim];
        if !offset.is_multiple_of(self.dtype.block_size())
            || (dim + 1 == self.rank() && !len.is_multiple_of(self.dtype.block_size()))
        {
            return Err(TensorError::PartialBlock {
                dtype: self.dtype,
                len,
                block: self.dtype.block_size(),
            });
        }
        let mut shape = self.shape.clone();
        shape[dim] = len;
        Ok(Self {
            shape,
            offset,
            ..self.clone()
        })
    }

    /// A contiguous copy (or `self` when already contiguous). Plain dtypes only for
    /// non-trivial views; quantized views are contiguous row-wise by construction.
    pub fn contiguous(&self) -> Result<Self> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        let elem = self.dtype.type_size();
        if self.dtype.is_quantized() {
            // Rows are whole blocks: gather them row by row.
            let row = *self.shape.last().unwrap_or(&1);
            let row_bytes = bytes_for(self.dtype, row).unwrap_or(0);
            let outer: Vec<usize> = self.shape[..self.rank() - 1].to_vec();
            let n_rows: usize = outer.iter().product();
            let src = self.storage.host_bytes().ok_or(TensorError::Unsupported {
                op: "contiguous",
                dtype: self.dtype,
                backend: "gpu",
            })?;
            let mut out = HostBytes::zeroed(n_rows * row_bytes);
            let dst = out.make_mut();
            for r in 0..n_rows {
                let start = self.byte_offset(self.element_index(&outer, r));
                dst[r * row_bytes..(r + 1) * row_bytes]
                    .copy_from_slice(&src[start..start + row_bytes]);
            }
            return Self::new(self.dtype, &self.shape, Storage::Host(out));
        }
        let src = self.storage.host_bytes().ok_or(TensorError::Unsupported {
            op: "contiguous",
            dtype: self.dtype,
            backend: "gpu",
        })?;
        let numel = self.numel();
        let mut out = HostBytes::zeroed(numel * elem);
        let dst = out.make_mut();
        let rank = self.rank();
        let mut idx = vec![0usize; rank];
        for i in 0..numel {
            let pos = self.offset
                + idx
                    .iter()
                    .zip(&self.strides)
                    .map(|(a, s)| a * s)
                    .sum::<usize>();
            dst[i * elem..(i + 1) * elem].copy_from_slice(&src[pos * elem..(pos + 1) * elem]);
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < self.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        Self::new(self.dtype, &self.shape, Storage::Host(out))
    }

    /// Element index of the first element of the `r`-th row (row-major over `outer`).
    fn element_index(&self, outer: &[usize], mut r: usize) -> usize {
        let mut pos = self.offset;
        for d in (0..outer.len()).rev() {
            pos += (r % outer[d]) * self.strides[d];
            r /= outer[d];
        }
        pos
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor({} {:?} on {})",
            self.dtype,
            self.shape,
            self.storage.backend_name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permute_then_contiguous_transposes() {
        let t = Tensor::from_f32(&[2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let tt = t.permute(&[1, 0]).unwrap().contiguous().unwrap();
        assert_eq!(tt.shape(), &[3, 2]);
        assert_eq!(tt.as_f32().unwrap(), &[1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn narrow_selects_rows_and_columns() {
        let t = Tensor::from_f32(&[3, 2], &[1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(
            t.narrow(0, 1, 2).unwrap().to_f32_vec().unwrap(),
            vec![3., 4., 5., 6.]
        );
        assert_eq!(
            t.narrow(1, 1, 1).unwrap().to_f32_vec().unwrap(),
            vec![2., 4., 6.]
        );
        assert!(t.narrow(0, 2, 2).is_err());
    }

    #[test]
    fn permute_rejects_repeated_dimensions() {
        let t = Tensor::from_f32(&[2, 3], &[0.; 6]).unwrap();
        assert!(t.permute(&[0, 0]).is_err());
        assert!(t.permute(&[1]).is_err());
    }

    #[test]
    fn storage_size_is_checked() {
        let bytes = gguf::MappedBytes::from_vec(vec![0; 10]);
        assert!(Tensor::from_mapped(DType::F32, &[3], bytes.clone()).is_err());
        assert!(Tensor::from_mapped(DType::Q4_0, &[32], bytes).is_err());
    }
}
