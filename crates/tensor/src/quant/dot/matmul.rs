//! `out = x · wᵀ` for a quantized weight `w`: validation, threading and the kernel choice.
//!
//! x is quantized once; then the weight rows are split into contiguous ranges, one rayon task
//! each, so every thread streams its own part of the weight matrix. Within a task:
//! - GEMM path (AVX-512 VNNI, n >= [`gemm_min_cols`], a packable type): 16 rows at a time are
//!   unpacked into a panel and multiplied with every activation row by the register-tiled
//!   micro-kernel (16 rows x 8 columns).
//! - Dot path (everything else): row dot products per (row, column), columns in tiles that
//!   stay in L2 while every weight row of the task sweeps over them (a weight row stays in L1
//!   across a tile).
//!
//! Batch invariance: the result for one (weight row, activation row) never depends on the
//! other activation rows, the batch size or the threading. Every path computes a fixed
//! function of the two rows: on AVX-512 VNNI the dot path of a packable type uses the GEMM's
//! own f32 order (`gemv` for the 32-element formats, `gemv_k` for Q4_K / Q6_K; the other
//! K-quant row kernels fold each super-block in as `fma(isum, d_w * d_x, f)` like the GEMM
//! lanes; Q2_K / Q3_K, which have no SIMD row kernel, always take the GEMM); on other levels
//! there is only the dot path.

use std::ops::Range;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::pack::{self, GemmActs, PANEL_ROWS, Panel, PanelKind};
use super::{
    Isa, QuantizedActivations, activation_type, kernel_for, quantize_activations_with, unsupported,
};
use crate::{DType, Result, Tensor, TensorError};

/// From this many activation rows on, packing panels pays for itself. The legacy row-group
/// kernel takes up to 8 columns per pass over its unpacked (and, from 4 columns, transposed)
/// blocks and, on weights streamed from memory, beats pack + GEMM up to 16 rows: a decode
/// step of 16 sequences of Qwen2.5-Coder 0.5B, 197 -> 220 t/s aggregate (`mtmd bench
/// --parallel`; `cargo bench -p benches -- matmul_few_rows` for cache-resident shapes).
/// Q4_K and Q6_K rows go 8 at a time (`gemv_k`, two columns per pass) and match pack + GEMM
/// up to 8 columns (Qwen2.5 0.5B's Q4_K ffn_down from the caches: 77 us for 2 columns, 170
/// for 4, against ~320 for the GEMM at 8). The other K-quant row kernels unpack partly in
/// scalar code per column. Q2_K and Q3_K have no SIMD row kernel in the GEMM's f32 order, so
/// they always take the GEMM.
#[cfg(target_arch = "x86_64")]
fn gemm_min_cols(weight: DType, kind: PanelKind) -> usize {
    match (weight, kind) {
        (DType::Q2K | DType::Q3K, _) => 1,
        (_, PanelKind::Legacy { .. }) => 17,
        (DType::Q4K | DType::Q6K, _) => 9,
        (_, PanelKind::KQuant { .. }) => 5,
    }
}
/// Activation bytes per column tile on the dot path (L2-resident).
const DOT_TILE_BYTES: usize = 256 * 1024;
/// Weight bytes below which a dot-path task is not worth a rayon hand-off (~1.5 us of
/// streaming; a decode step keeps the pool's workers awake, `cpu::on_compute_pool`, so a
/// hand-off is a steal, not a wake-up).
const MIN_TASK_BYTES: usize = 32 * 1024;

/// `out[n, m] = x[n, k] · w[m, k]ᵀ` for a quantized host tensor `w` (any rank; the last
/// dimension is k), with the detected kernels.
pub fn matmul_quant(w: &Tensor, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    matmul_quant_with(Isa::detected(), w, x, n, out)
}

/// [`matmul_quant`] with a chosen kernel level (must be in [`Isa::available`]).
pub fn matmul_quant_with(isa: Isa, w: &Tensor, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    super::check_available(isa)?;
    let weights = Weights::of(w, "matmul_quant")?;
    if x.len() != n * weights.k || out.len() != n * weights.m {
        return Err(TensorError::ShapeMismatch {
            op: "matmul_quant",
            detail: format!(
                "w {:?} ({}) with x of {} values as {n} rows and out of {} values (need {} and {})",
                w.shape(),
                weights.dtype,
                x.len(),
                out.len(),
                n * weights.k,
                n * weights.m
            ),
        });
    }
    if n == 0 || weights.m == 0 {
        return Ok(());
    }
    let acts = quantize_activations_with(isa, weights.act_type, x, n)?;
    run(isa, &weights, &acts, out)
}

/// `out[n, m] = acts · wᵀ` with the activations already quantized to
/// [`activation_type`]`(w.dtype())`: quantize x once with [`quantize_activations`] and reuse
/// it for every weight that reads the same input (q/k/v, gate/up).
///
/// [`quantize_activations`]: super::quantize_activations
pub fn matmul_quant_acts(w: &Tensor, acts: &QuantizedActivations, out: &mut [f32]) -> Result<()> {
    matmul_quant_acts_with(Isa::detected(), w, acts, out)
}

/// [`matmul_quant_acts`] with a chosen kernel level (must be in [`Isa::available`]).
pub fn matmul_quant_acts_with(
    isa: Isa,
    w: &Tensor,
    acts: &QuantizedActivations,
    out: &mut [f32],
) -> Result<()> {
    super::check_available(isa)?;
    let weights = Weights::of(w, "matmul_quant_acts")?;
    let n = acts.rows();
    if acts.dtype() != weights.act_type
        || (n > 0 && acts.row_len() != weights.k)
        || out.len() != n * weights.m
    {
        return Err(TensorError::ShapeMismatch {
            op: "matmul_quant_acts",
            detail: format!(
                "w {:?} ({}, wants {} rows of {}) with {n} {} rows of {} and out of {} values",
                w.shape(),
                weights.dtype,
                weights.act_type,
                weights.k,
                acts.dtype(),
                acts.row_len(),
                out.len()
            ),
        });
    }
    if n == 0 || weights.m == 0 {
        return Ok(());
    }
    run(isa, &weights, acts, out)
}

/// An 8-row group kernel: `gemv::dot_group`'s signature.
#[cfg(target_arch = "x86_64")]
type GroupKernel = fn(DType, &[u8], usize, &GemmActs, Range<usize>, &mut [f32]) -> bool;

/// The GEMM or the dot path over validated operands.
fn run(isa: Isa, weights: &Weights, acts: &QuantizedActivations, out: &mut [f32]) -> Result<()> {
    let n = acts.rows();
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512Vnni
        && let Some(kind) = pack::panel_kind(weights.dtype)
        && let Some(prepared) = pack::gemm_acts(acts, kind)
    {
        if n >= gemm_min_cols(weights.dtype, kind) {
            return run_gemm(weights, kind, &prepared, out);
        }
        // Few columns: groups of 8 rows on the prepared tables (the 32-element formats, and
        // Q4_K / Q6_K), in the GEMM's f32 order.
        let group_kernel = match kind {
            PanelKind::Legacy { .. } => Some(super::gemv::dot_group as GroupKernel),
            _ if super::gemv_k::supports(weights.dtype) => Some(super::gemv_k::dot_group as _),
            _ => None,
        };
        if let Some(kernel) = group_kernel {
            let group = super::gemv::GROUP_ROWS;
            return run_rows(weights, acts, out, group, |rows, cols, o| {
                let bytes =
                    &weights.bytes[rows.start * weights.row_bytes..rows.end * weights.row_bytes];
                kernel(weights.dtype, bytes, weights.row_bytes, &prepared, cols, o)
            });
        }
    }
    let dot = kernel_for(isa, weights.dtype)?;
    run_rows(weights, acts, out, 1, |rows, cols, o| {
        let w_row = weights.row(rows.start);
        for (o, c) in o.iter_mut().zip(cols) {
            *o = dot(w_row, acts.row(c));
        }
        true
    })
}

/// The dot path: `dots(weight rows, column range, out)` per group of `group` weight rows (the
/// last one may be shorter) and column tile, `out[i * group + r]` for column `cols.start + i`
/// and row `rows.start + r`; rows split over rayon tasks; columns in tiles that stay in L2
/// while the task's weight rows sweep over them (a weight row stays in L1 across a tile).
fn run_rows(
    weights: &Weights,
    acts: &QuantizedActivations,
    out: &mut [f32],
    group: usize,
    dots: impl Fn(Range<usize>, Range<usize>, &mut [f32]) -> bool + Sync,
) -> Result<()> {
    let (n, m) = (acts.rows(), weights.m);
    let act_row_bytes = acts.row(0).len();
    let tile = (DOT_TILE_BYTES / act_row_bytes.max(1)).clamp(1, n);
    let min_rows = (MIN_TASK_BYTES / weights.row_bytes.max(1)).max(group);
    let bounds = row_ranges(m, group, min_rows);
    let per_task = column_slices(out, m, &bounds);
    let failed = for_each_task(per_task, |t, mut cols| {
        let rows = bounds[t]..bounds[t + 1];
        let mut values = vec![0f32; tile * group];
        for c0 in (0..n).step_by(tile) {
            let c1 = (c0 + tile).min(n);
            for r0 in rows.clone().step_by(group) {
                let r1 = (r0 + group).min(rows.end);
                if !dots(r0..r1, c0..c1, &mut values) {
                    return true;
                }
                for (c, v) in (c0..c1).zip(values.chunks_exact(group)) {
                    cols[c][r0 - rows.start..r1 - rows.start].copy_from_slice(&v[..r1 - r0]);
                }
            }
        }
        false
    });
    if failed {
        return Err(TensorError::InvalidView(format!(
            "matmul_quant: {} row kernel rejected its operands (internal size mismatch)",
            weights.dtype
        )));
    }
    Ok(())
}

/// A quantized weight matrix `[m, k]` as raw row bytes.
struct Weights<'a> {
    dtype: DType,
    act_type: DType,
    bytes: &'a [u8],
    row_bytes: usize,
    k: usize,
    m: usize,
}

impl<'a> Weights<'a> {
    /// Checks `w` (a contiguous host tensor of a supported type; any rank, the last dimension
    /// is k) and views its bytes.
    fn of(w: &'a Tensor, op: &'static str) -> Result<Self> {
        let dtype = w.dtype();
        let act_type = activation_type(dtype).ok_or_else(|| unsupported(op, dtype))?;
        let k = if w.rank() == 0 { 1 } else { w.dim(-1) };
        let m = w.numel().checked_div(k).unwrap_or(0);
        if !k.is_multiple_of(act_type.block_size()) {
            return Err(TensorError::PartialBlock {
                dtype: act_type,
                len: k,
                block: act_type.block_size(),
            });
        }
        let bytes = w.host_bytes()?;
        let row_bytes = k / dtype.block_size() * dtype.type_size();
        if bytes.len() != m * row_bytes {
            return Err(TensorError::InvalidView(format!(
                "{op}: {dtype} weight {:?} has {} bytes, expected {}",
                w.shape(),
                bytes.len(),
                m * row_bytes
            )));
        }
        Ok(Self {
            dtype,
            act_type,
            bytes,
            row_bytes,
            k,
            m,
        })
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes]
    }
}

#[cfg(target_arch = "x86_64")]
fn run_gemm(w: &Weights, kind: PanelKind, acts: &GemmActs, out: &mut [f32]) -> Result<()> {
    let bounds = row_ranges(w.m, PANEL_ROWS, PANEL_ROWS);
    let per_task = column_slices(out, w.m, &bounds);
    let failed = for_each_task(per_task, |t, mut cols| {
        let mut panel = Panel::default();
        let mut rows: Vec<&[u8]> = Vec::with_capacity(PANEL_ROWS);
        for r0 in (bounds[t]..bounds[t + 1]).step_by(PANEL_ROWS) {
            let r1 = (r0 + PANEL_ROWS).min(bounds[t + 1]);
            rows.clear();
            rows.extend((r0..r1).map(|r| w.row(r)));
            if !pack::pack_panel(w.dtype, &rows, w.k, &mut panel)
                || !super::gemm::gemm_panel(&panel, kind, acts, &mut cols, r0 - bounds[t])
            {
                return true;
            }
        }
        false
    });
    if failed {
        return Err(TensorError::InvalidView(format!(
            "matmul_quant: {} panel layout rejected (internal size mismatch)",
            w.dtype
        )));
    }
    Ok(())
}

/// Runs `task(t, its column slices)` for every task, on the rayon pool when there are several
/// (a single task stays on the calling thread: no hand-off latency for small matrices).
/// Returns true if any task failed.
fn for_each_task<'a>(
    per_task: Vec<Vec<&'a mut [f32]>>,
    task: impl Fn(usize, Vec<&'a mut [f32]>) -> bool + Sync + Send,
) -> bool {
    if per_task.len() == 1 {
        return per_task
            .into_iter()
            .enumerate()
            .any(|(t, cols)| task(t, cols));
    }
    per_task
        .into_par_iter()
        .enumerate()
        .map(|(t, cols)| task(t, cols))
        .reduce(|| false, |a, b| a || b)
}

/// Splits `m` rows into contiguous ranges (multiples of `align` except the last), a few per
/// thread so an unevenly loaded machine still balances; each at least `min_rows` long.
fn row_ranges(m: usize, align: usize, min_rows: usize) -> Vec<usize> {
    let threads = rayon::current_num_threads().max(1);
    // One pool thread: no point splitting (each hand-off costs a wake-up).
    let per_thread = if threads == 1 { 1 } else { 4 };
    let tasks = (per_thread * threads)
        .min(m.div_ceil(min_rows.max(1)))
        .max(1);
    let per_task = m.div_ceil(tasks).div_ceil(align) * align;
    let mut bounds: Vec<usize> = (0..m).step_by(per_task.max(1)).collect();
    bounds.push(m);
    bounds
}

/// Splits `out` ([n, m] row-major) into, per task, the n slices of its row range: task t
/// writes `out[c][bounds[t]..bounds[t+1]]` for every column c.
fn column_slices<'a>(out: &'a mut [f32], m: usize, bounds: &[usize]) -> Vec<Vec<&'a mut [f32]>> {
    let tasks = bounds.len() - 1;
    let n = out.len() / m.max(1);
    let mut per_task: Vec<Vec<&'a mut [f32]>> = (0..tasks).map(|_| Vec::with_capacity(n)).collect();
    for col in out.chunks_exact_mut(m) {
        let mut rest = col;
        for t in 0..tasks {
            let (head, tail) = rest.split_at_mut(bounds[t + 1] - bounds[t]);
            per_task[t].push(head);
            rest = tail;
        }
    }
    per_task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ranges_cover_rows_in_aligned_pieces() {
        for m in [1, 15, 16, 17, 100, 2048, 262_144] {
            let b = row_ranges(m, 16, 16);
            assert_eq!(*b.first().unwrap(), 0);
            assert_eq!(*b.last().unwrap(), m);
            for w in b.windows(2) {
                assert!(w[0] < w[1]);
                if w[1] != m {
                    assert_eq!((w[1] - w[0]) % 16, 0);
                }
            }
        }
    }

    #[test]
    fn column_slices_partition_the_output() {
        let mut out: Vec<f32> = (0..30).map(|v| v as f32).collect();
        let per_task = column_slices(&mut out, 10, &[0, 4, 10]);
        assert_eq!(per_task.len(), 2);
        assert_eq!(per_task[0][1], &[10.0, 11.0, 12.0, 13.0]);
        assert_eq!(per_task[1][2], &[24.0, 25.0, 26.0, 27.0, 28.0, 29.0]);
    }
}
