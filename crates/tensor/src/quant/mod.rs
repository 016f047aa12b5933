//! GGUF block formats: byte layouts ([`blocks`]) and bit-exact dequantization of every
//! ggml storage type to f32.
//!
//! "Bit-exact" means each element is computed with the same f32 operations in the same
//! order as ggml's `dequantize_row_*`, so results equal llama.cpp's including signed zeros
//! and subnormals. The per-format code is split by family: [`float`] (plain types),
//! `legacy` (32-element blocks), `kquants` (K-quants and ternary), `iquants` (IQ formats,
//! grids in [`iq_tables`]) and `fp4` (MXFP4 / NVFP4).

pub mod blocks;
pub mod dot;
pub mod float;
pub mod iq_tables;

mod fp4;
mod iquants;
mod kquants;
mod legacy;

use rayon::prelude::*;

use crate::{DType, Result, TensorError};
use blocks::*;

pub use float::{f32_to_bf16, f32_to_bf16_slice, f32_to_f16, f32_to_f16_slice};

/// A block that can be turned into f32 values.
pub trait DequantizeBlock: Block {
    /// Writes this block's `Self::ELEMS` values to `y[..Self::ELEMS]`.
    fn dequantize_block(&self, y: &mut [f32]);
}

/// Below this many output elements [`dequantize`] stays on the calling thread.
const PARALLEL_MIN_ELEMS: usize = 1 << 16;
/// Output elements per rayon task.
const TASK_ELEMS: usize = 1 << 14;

/// Dequantizes `src` (whole blocks of `dtype`) into `dst` (`dst.len()` elements), in
/// parallel for large inputs.
///
/// `dst.len()` must be a whole number of blocks and `src` exactly that many blocks.
pub fn dequantize(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_sizes(dtype, src.len(), dst.len())?;
    if dst.len() < PARALLEL_MIN_ELEMS {
        return dequantize_unchecked(dtype, src, dst);
    }
    let blocks_per_task = (TASK_ELEMS / dtype.block_size()).max(1);
    src.par_chunks(blocks_per_task * dtype.type_size())
        .zip(dst.par_chunks_mut(blocks_per_task * dtype.block_size()))
        .try_for_each(|(s, d)| dequantize_unchecked(dtype, s, d))
}

/// Same contract as [`dequantize`], always on the calling thread (for one row, or when the
/// caller already parallelizes).
pub fn dequantize_row(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    check_sizes(dtype, src.len(), dst.len())?;
    dequantize_unchecked(dtype, src, dst)
}

/// Bytes that `n_elems` elements of `dtype` occupy, if `n_elems` is a whole number of blocks.
pub fn bytes_for(dtype: DType, n_elems: usize) -> Option<usize> {
    if !n_elems.is_multiple_of(dtype.block_size()) {
        return None;
    }
    (n_elems / dtype.block_size()).checked_mul(dtype.type_size())
}

fn check_sizes(dtype: DType, src_len: usize, dst_len: usize) -> Result<()> {
    let Some(needed) = bytes_for(dtype, dst_len) else {
        return Err(TensorError::PartialBlock {
            dtype,
            len: dst_len,
            block: dtype.block_size(),
        });
    };
    if src_len != needed {
        return Err(TensorError::ShapeMismatch {
            op: "dequantize",
            detail: format!(
                "{dst_len} elements of {dtype} need {needed} bytes, source has {src_len}"
            ),
        });
    }
    Ok(())
}

fn blocks_into<B: DequantizeBlock>(src: &[u8], dst: &mut [f32]) -> Result<()> {
    let blocks = as_blocks::<B>(src)?;
    for (b, y) in blocks.iter().zip(dst.chunks_exact_mut(B::ELEMS)) {
        b.dequantize_block(y);
    }
    Ok(())
}

/// Sizes already checked.
fn dequantize_unchecked(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    match dtype {
        DType::F32 => float::f32_le(src, dst),
        DType::F16 => float::f16_le(src, dst),
        DType::BF16 => float::bf16_le(src, dst),
        DType::F64 => float::f64_le(src, dst),
        DType::I8 => float::i8_le(src, dst),
        DType::I16 => float::i16_le(src, dst),
        DType::I32 => float::i32_le(src, dst),
        DType::I64 => float::i64_le(src, dst),
        DType::Q4_0 => return blocks_into::<BlockQ4_0>(src, dst),
        DType::Q4_1 => return blocks_into::<BlockQ4_1>(src, dst),
        DType::Q5_0 => return blocks_into::<BlockQ5_0>(src, dst),
        DType::Q5_1 => return blocks_into::<BlockQ5_1>(src, dst),
        DType::Q8_0 => return blocks_into::<BlockQ8_0>(src, dst),
        DType::Q8_1 => return blocks_into::<BlockQ8_1>(src, dst),
        DType::Q2K => return blocks_into::<BlockQ2K>(src, dst),
        DType::Q3K => return blocks_into::<BlockQ3K>(src, dst),
        DType::Q4K => return blocks_into::<BlockQ4K>(src, dst),
        DType::Q5K => return blocks_into::<BlockQ5K>(src, dst),
        DType::Q6K => return blocks_into::<BlockQ6K>(src, dst),
        DType::Q8K => return blocks_into::<BlockQ8K>(src, dst),
        DType::IQ2XXS => return blocks_into::<BlockIQ2XXS>(src, dst),
        DType::IQ2XS => return blocks_into::<BlockIQ2XS>(src, dst),
        DType::IQ2S => return blocks_into::<BlockIQ2S>(src, dst),
        DType::IQ3XXS => return blocks_into::<BlockIQ3XXS>(src, dst),
        DType::IQ3S => return blocks_into::<BlockIQ3S>(src, dst),
        DType::IQ1S => return blocks_into::<BlockIQ1S>(src, dst),
        DType::IQ1M => return blocks_into::<BlockIQ1M>(src, dst),
        DType::IQ4NL => return blocks_into::<BlockIQ4NL>(src, dst),
        DType::IQ4XS => return blocks_into::<BlockIQ4XS>(src, dst),
        DType::TQ1_0 => return blocks_into::<BlockTQ1_0>(src, dst),
        DType::TQ2_0 => return blocks_into::<BlockTQ2_0>(src, dst),
        DType::MXFP4 => return blocks_into::<BlockMXFP4>(src, dst),
        DType::NVFP4 => return blocks_into::<BlockNVFP4>(src, dst),
    }
    Ok(())
}

#[cfg(test)]
mod slow;
#[cfg(test)]
mod tests;
