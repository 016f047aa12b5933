//! Row gather from an embedding table of any dtype (contract in `ops::get_rows`).

use rayon::prelude::*;

use crate::{DType, Result, Tensor, TensorError};

/// Output elements below which the gather stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// `out[r, :] = table[ids[r], :]` as f32, for a table `[n_rows, cols]` of any dtype
/// (quantized rows are dequantized). Errors on an id past the table or a wrong `out` size.
pub fn get_rows(table: &Tensor, ids: &[u32], out: &mut [f32]) -> Result<()> {
    let cols = table.shape().last().copied().unwrap_or(1);
    let n_rows = table.numel().checked_div(cols).unwrap_or(0);
    if out.len() != ids.len() * cols {
        return Err(TensorError::ShapeMismatch {
            op: "get_rows",
            detail: format!(
                "{} ids of {cols} columns need {} outputs, got {}",
                ids.len(),
                ids.len() * cols,
                out.len()
            ),
        });
    }
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= n_rows) {
        return Err(TensorError::ShapeMismatch {
            op: "get_rows",
            detail: format!("row id {bad} out of range for a table of {n_rows} rows"),
        });
    }
    if cols == 0 {
        return Ok(());
    }
    let owned;
    let table = if table.is_contiguous() {
        table
    } else {
        owned = table.contiguous()?;
        &owned
    };
    let dtype = table.dtype();
    let row_bytes = crate::quant::bytes_for(dtype, cols).ok_or(TensorError::PartialBlock {
        dtype,
        len: cols,
        block: dtype.block_size(),
    })?;
    let bytes = table.host_bytes()?;
    let copy_row = |id: u32, dst: &mut [f32]| -> Result<()> {
        let src = &bytes[id as usize * row_bytes..(id as usize + 1) * row_bytes];
        match dtype {
            DType::F32 => {
                for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                    *d = f32::from_le_bytes([s[0], s[1], s[2], s[3]]);
                }
                Ok(())
            }
            _ => crate::quant::dequantize_row(dtype, src, dst),
        }
    };
    if out.len() < PARALLEL_MIN {
        ids.iter()
            .zip(out.chunks_exact_mut(cols))
            .try_for_each(|(&id, d)| copy_row(id, d))
    } else {
        ids.par_iter()
            .zip(out.par_chunks_exact_mut(cols))
            .try_for_each(|(&id, d)| copy_row(id, d))
    }
}
