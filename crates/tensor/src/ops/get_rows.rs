//! `get_rows`: gather rows of a `[n_rows, cols]` table (token embeddings) by id, any dtype,
//! into f32 `[n_ids, cols]`.

use crate::{Result, Tensor, cpu};

/// The scalar definition every backend is tested against: `table` is the f32 (dequantized)
/// table with rows of `cols`; ids must be in range (panics otherwise).
pub fn reference(table: &[f32], cols: usize, ids: &[u32], out: &mut [f32]) {
    for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(cols)) {
        let start = id as usize * cols;
        dst.copy_from_slice(&table[start..start + cols]);
    }
}

/// Rows `ids` of `table` as an f32 tensor `[ids.len(), cols]`.
pub fn get_rows(table: &Tensor, ids: &[u32]) -> Result<Tensor> {
    let cols = table.shape().last().copied().unwrap_or(1);
    let mut out = vec![0f32; ids.len() * cols];
    cpu::get_rows(table, ids, &mut out)?;
    Tensor::from_f32(&[ids.len(), cols], &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_and_rejects_bad_ids() {
        let t = Tensor::from_f32(&[3, 2], &[0., 1., 2., 3., 4., 5.]).unwrap();
        let y = get_rows(&t, &[2, 0, 2]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(y.as_f32().unwrap(), &[4., 5., 0., 1., 4., 5.]);
        assert!(get_rows(&t, &[3]).is_err());
    }
}
