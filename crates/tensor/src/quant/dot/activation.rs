//! Activation quantization: f32 rows to the 8-bit block formats the dot products consume.
//!
//! The scalar functions here are the reference (ggml's `quantize_row_q8_*_ref`); the SIMD
//! versions in `x86` produce bit-identical blocks.
//! - Q8_0: per 32 values `d = amax / 127` (stored as f16), `q = round(x * (1/d))`, rounding half
//!   away from zero.
//! - Q8_1: Q8_0 plus `s = f16(d * sum(q))`.
//! - Q8_K: per 256 values the element of largest magnitude `max` (the first one on ties) gives
//!   `iscale = -127 / max`, `q = min(127, round_half_even(x * iscale))`, `d = 1 / iscale` (f32),
//!   and `bsums[i]` = sum of q over each 16 values.

use half::f16;
use rayon::prelude::*;

use super::Isa;
use crate::quant::blocks::{BlockQ8_0, BlockQ8_1, BlockQ8K, QK_K, QK32};
use crate::{DType, Result, TensorError};

/// Activation rows quantized to one of the 8-bit formats (Q8_0, Q8_1 or Q8_K).
#[derive(Clone, Debug)]
pub struct QuantizedActivations {
    rows: usize,
    row_len: usize,
    blocks: ActBlocks,
}

#[derive(Clone, Debug)]
pub(super) enum ActBlocks {
    Q8_0(Vec<BlockQ8_0>),
    Q8_1(Vec<BlockQ8_1>),
    Q8K(Vec<BlockQ8K>),
}

impl QuantizedActivations {
    pub fn dtype(&self) -> DType {
        match self.blocks {
            ActBlocks::Q8_0(_) => DType::Q8_0,
            ActBlocks::Q8_1(_) => DType::Q8_1,
            ActBlocks::Q8K(_) => DType::Q8K,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// All rows as raw block bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.blocks {
            ActBlocks::Q8_0(b) => bytemuck::cast_slice(b),
            ActBlocks::Q8_1(b) => bytemuck::cast_slice(b),
            ActBlocks::Q8K(b) => bytemuck::cast_slice(b),
        }
    }

    /// The block bytes of row `i` (empty when out of range).
    pub fn row(&self, i: usize) -> &[u8] {
        let per_row = self.row_len / self.dtype().block_size() * self.dtype().type_size();
        self.as_bytes()
            .get(i * per_row..(i + 1) * per_row)
            .unwrap_or(&[])
    }

    pub(super) fn blocks(&self) -> &ActBlocks {
        &self.blocks
    }

    /// The values the integer dot products actually see (`d * q` per element), row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.row_len);
        match &self.blocks {
            ActBlocks::Q8_0(blocks) => {
                for b in blocks {
                    let d = b.d.to_f32();
                    out.extend(b.qs.iter().map(|&q| f32::from(q) * d));
                }
            }
            ActBlocks::Q8_1(blocks) => {
                for b in blocks {
                    let d = b.d.to_f32();
                    out.extend(b.qs.iter().map(|&q| f32::from(q) * d));
                }
            }
            ActBlocks::Q8K(blocks) => {
                for b in blocks {
                    out.extend(b.qs.iter().map(|&q| f32::from(q) * b.d));
                }
            }
        }
        out
    }
}

/// Quantizes `rows` rows of `x` (row-major, `x.len() / rows` elements each) to `act_type`
/// (Q8_0, Q8_1 or Q8_K) with the detected kernels; rows are spread over the rayon pool.
pub fn quantize_activations(
    act_type: DType,
    x: &[f32],
    rows: usize,
) -> Result<QuantizedActivations> {
    quantize_activations_with(Isa::detected(), act_type, x, rows)
}

/// [`quantize_activations`] with a chosen kernel level. Every level gives identical bytes.
pub fn quantize_activations_with(
    isa: Isa,
    act_type: DType,
    x: &[f32],
    rows: usize,
) -> Result<QuantizedActivations> {
    super::check_available(isa)?;
    let block = act_type.block_size();
    let row_len = x.len().checked_div(rows).unwrap_or(0);
    if rows * row_len != x.len() || !row_len.is_multiple_of(block) {
        return Err(TensorError::ShapeMismatch {
            op: "quantize_activations",
            detail: format!(
                "{} values are not {rows} rows of whole {act_type} blocks ({block} values)",
                x.len()
            ),
        });
    }
    let per_row = row_len / block.max(1);
    let blocks = match act_type {
        DType::Q8_0 => {
            let mut out = vec![BlockQ8_0::zeroed_block(); rows * per_row];
            fill_rows(&mut out, x, per_row, block, |x, o| quantize_q8_0(isa, x, o));
            ActBlocks::Q8_0(out)
        }
        DType::Q8_1 => {
            let mut out = vec![BlockQ8_1::zeroed_block(); rows * per_row];
            fill_rows(&mut out, x, per_row, block, quantize_q8_1_ref);
            ActBlocks::Q8_1(out)
        }
        DType::Q8K => {
            let mut out = vec![BlockQ8K::zeroed_block(); rows * per_row];
            fill_rows(&mut out, x, per_row, block, |x, o| quantize_q8k(isa, x, o));
            ActBlocks::Q8K(out)
        }
        other => {
            return Err(TensorError::Unsupported {
                op: "quantize_activations",
                dtype: other,
                backend: "cpu",
            });
        }
    };
    Ok(QuantizedActivations {
        rows,
        row_len,
        blocks,
    })
}

/// All-zero value of a block struct.
trait ZeroedBlock: bytemuck::Zeroable {
    fn zeroed_block() -> Self {
        Self::zeroed()
    }
}
impl ZeroedBlock for BlockQ8_0 {}
impl ZeroedBlock for BlockQ8_1 {}
impl ZeroedBlock for BlockQ8K {}

/// Runs `quantize` over groups of rows in parallel (whole rows, so each block sees its values).
fn fill_rows<B: Send>(
    out: &mut [B],
    x: &[f32],
    blocks_per_row: usize,
    block: usize,
    quantize: impl Fn(&[f32], &mut [B]) + Sync,
) {
    if blocks_per_row == 0 {
        return;
    }
    // A rayon hand-off costs microseconds: small inputs (token generation) stay on this thread.
    if x.len() <= 1 << 15 {
        return quantize(x, out);
    }
    // About 64 KiB of input per task: enough to amortize scheduling, small enough to balance.
    let rows_per_task = (16384 / (blocks_per_row * block)).max(1);
    out.par_chunks_mut(blocks_per_row * rows_per_task)
        .zip(x.par_chunks(blocks_per_row * block * rows_per_task))
        .for_each(|(o, x)| quantize(x, o));
}

fn quantize_q8_0(isa: Isa, x: &[f32], out: &mut [BlockQ8_0]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return super::x86_convert::quantize_q8_0(x, out);
    }
    let _ = isa;
    quantize_q8_0_ref(x, out)
}

fn quantize_q8k(isa: Isa, x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar {
        return super::x86_convert::quantize_q8k(x, out);
    }
    let _ = isa;
    quantize_q8k_ref(x, out)
}

/// Scale and inverse scale of a Q8_0 / Q8_1 block.
#[inline]
pub(super) fn q8_0_scales(x: &[f32]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

/// Reference Q8_0 quantization of whole blocks of `x` into `out`.
pub(super) fn quantize_q8_0_ref(x: &[f32], out: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(QK32).zip(out) {
        let (d, id) = q8_0_scales(x);
        b.d = f16::from_f32(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
        }
    }
}

/// Reference Q8_1 quantization (Q8_0 plus `s = d * sum(q)`, both stored as f16).
pub(super) fn quantize_q8_1_ref(x: &[f32], out: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(QK32).zip(out) {
        let (d, id) = q8_0_scales(x);
        b.d = f16::from_f32(d);
        let mut sum = 0i32;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i8;
            sum += i32::from(*q);
        }
        b.s = f16::from_f32(sum as f32 * d);
    }
}

/// The signed element of largest magnitude (the first on ties), as ggml's Q8_K picks it.
#[inline]
pub(super) fn q8k_max(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// Reference Q8_K quantization of whole blocks of `x` into `out`.
pub(super) fn quantize_q8k_ref(x: &[f32], out: &mut [BlockQ8K]) {
    for (x, b) in x.chunks_exact(QK_K).zip(out) {
        let max = q8k_max(x);
        if max == 0.0 {
            *b = BlockQ8K::zeroed_block();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            // round_ties_even is what ggml's nearest_int (the 1.5 * 2^23 trick) computes.
            *q = ((v * iscale).round_ties_even() as i32).min(127) as i8;
        }
        for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = q.iter().map(|&v| i16::from(v)).sum();
        }
        b.d = 1.0 / iscale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_rounds_half_away_from_zero() {
        // amax 127 gives d = 1 exactly, so x * id is x.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -2.5;
        x[3] = 0.49999997;
        let mut out = [BlockQ8_0::zeroed_block()];
        quantize_q8_0_ref(&x, &mut out);
        assert_eq!(out[0].d.to_f32(), 1.0);
        assert_eq!(&out[0].qs[..4], &[127, 3, -3, 0]);
    }

    #[test]
    fn q8k_uses_first_largest_magnitude_and_ties_to_even() {
        let mut x = [0f32; 256];
        x[5] = -127.0;
        x[9] = 127.0;
        x[10] = 2.5;
        x[11] = 3.5;
        let mut out = [BlockQ8K::zeroed_block()];
        quantize_q8k_ref(&x, &mut out);
        // max = -127 -> iscale = 1, d = 1.
        assert_eq!(out[0].d, 1.0);
        assert_eq!(out[0].qs[5], -127);
        assert_eq!(out[0].qs[9], 127);
        assert_eq!(out[0].qs[10], 2);
        assert_eq!(out[0].qs[11], 4);
        assert_eq!(out[0].bsums[0], 2 + 4); // -127 and 127 cancel
    }

    #[test]
    fn rejects_partial_blocks() {
        assert!(quantize_activations_with(Isa::Scalar, DType::Q8K, &[0.0; 300], 1).is_err());
        assert!(quantize_activations_with(Isa::Scalar, DType::Q8_0, &[0.0; 64], 3).is_err());
        assert!(quantize_activations_with(Isa::Scalar, DType::Q4_0, &[0.0; 64], 1).is_err());
    }
}
