//! `shaders/matmul.wgsl`: out[n, m] = x[n, k] · w[m, k]ᵀ with w in any of the float or
//! quantized formats of [`weight_type_constant`], decoded in the shader straight from its
//! stored blocks.

use super::rows::optional_binding;
use super::{Bound, Dispatch, prepare, submit, to_u32};
use crate::gpu::GpuBuffer;
use crate::gpu::split::{RowLayout, plan_row_chunks};
use crate::{DType, Result, TensorError};

/// Mirrors `MatmulParams` in `shaders/matmul.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct MatmulParams {
    /// Weight rows in this chunk (output columns written).
    pub m: u32,
    /// x rows in this chunk.
    pub n: u32,
    pub k: u32,
    /// Bytes from the weight binding start to the chunk's first weight row.
    pub w_offset: u32,
    /// Elements from the x binding start to the chunk's first row.
    pub x_offset: u32,
    /// Elements from the output binding start to the chunk's first row.
    pub out_offset: u32,
    /// Output row length (every weight row).
    pub out_stride: u32,
    /// Output column of the chunk's first weight row.
    pub out_col: u32,
}

/// Workgroup size and x rows per thread in the shader.
const WORKGROUP: u64 = 64;
const ROWS_PER_THREAD: u64 = 4;

/// Up to this many x rows take the `matvec` entry point (a few invocations split k of one
/// weight row); above it each invocation owns a weight row and reuses its decoded values
/// across x rows.
pub(crate) const MATVEC_MAX_ROWS: usize = 4;
/// Weight rows per `matvec` workgroup: its 64 invocations split k eight ways. On lavapipe the
/// cost per workgroup dominates with fewer rows (16 lanes: ~1.7x slower at k = 1024), and
/// fewer lanes leave long rows to few invocations.
const MATVEC_WEIGHT_ROWS: u64 = 8;

/// The shader's `W_TYPE` override for a weight dtype (ggml type ids), or `None`.
pub(crate) fn weight_type_constant(dtype: DType) -> Option<f64> {
    match dtype {
        DType::F32
        | DType::F16
        | DType::BF16
        | DType::Q4_0
        | DType::Q4_1
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q8_0
        | DType::Q2K
        | DType::Q3K
        | DType::Q4K
        | DType::Q5K
        | DType::Q6K
        | DType::IQ4NL
        | DType::IQ4XS => Some(dtype as u32 as f64),
        _ => None,
    }
}

/// What the matmul does to each result before storing it: add a bias (one f32 per output
/// column, `m` of them) and apply an activation (`EPILOGUE_ACT`: 0 none, then the prelude's
/// `ACT_*` codes).
#[derive(Clone, Copy, Default)]
pub(crate) struct Epilogue<'a> {
    pub bias: Option<&'a GpuBuffer>,
    pub act: u32,
}

/// `out` (n×m f32) = epilogue(`x` (n×k f32) · `w` (m×k of `w_type`)ᵀ).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    w: &GpuBuffer,
    w_type: DType,
    m: usize,
    k: usize,
    x: &GpuBuffer,
    n: usize,
    epilogue: Epilogue<'_>,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = w.context();
    let unsupported = || TensorError::Unsupported {
        op: "matmul",
        dtype: w_type,
        backend: "gpu",
    };
    let w_code = weight_type_constant(w_type).ok_or_else(unsupported)?;
    if !k.is_multiple_of(w_type.block_size()) {
        return Err(TensorError::PartialBlock {
            dtype: w_type,
            len: k,
            block: w_type.block_size(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let w_row = w_type.row_bytes(k as u64).ok_or_else(unsupported)?;
    let matvec = n <= MATVEC_MAX_ROWS;
    let entry = if matvec { "matvec" } else { "main" };
    let x_rows = if n == 1 { 1.0 } else { ROWS_PER_THREAD as f64 };
    let mut constants = vec![("W_TYPE", w_code), ("X_ROWS", x_rows)];
    if epilogue.bias.is_some() {
        constants.push(("EPILOGUE_BIAS", 1.0));
    }
    if epilogue.act != 0 {
        constants.push(("EPILOGUE_ACT", f64::from(epilogue.act)));
    }
    if matvec {
        constants.push(("MV_LANES", (WORKGROUP / MATVEC_WEIGHT_ROWS) as f64));
    }
    let pipeline = ctx.pipeline("matmul", entry, &constants)?;
    let limit = ctx.binding_limit();
    let align = ctx.offset_align();
    let k32 = to_u32(k as u64, "k")?;
    let m32 = to_u32(m as u64, "m")?;

    ctx.capture(|| {
        let bias = optional_binding(epilogue.bias.map(|b| (b, m * 4)), x, limit, "matmul bias")?;
        let mut dispatches: Vec<Dispatch> = Vec::new();
        let w_layout = RowLayout {
            base: 0,
            row_bytes: w_row,
        };
        for wc in plan_row_chunks(m, &[w_layout], limit, align, usize::MAX)? {
            // Keep the thread count (weight rows × row groups) well inside u32.
            let max_n = ((1u64 << 30) / wc.rows as u64 * ROWS_PER_THREAD).max(1) as usize;
            let x_layout = RowLayout {
                base: 0,
                row_bytes: k as u64 * 4,
            };
            let out_layout = RowLayout {
                base: 0,
                row_bytes: m as u64 * 4,
            };
            for xc in plan_row_chunks(n, &[x_layout, out_layout], limit, align, max_n)? {
                // One range per layout, in the order given.
                let (wr, xr, or) = (wc.ranges[0], xc.ranges[0], xc.ranges[1]);
                let params = MatmulParams {
                    m: to_u32(wc.rows as u64, "weight rows")?,
                    n: to_u32(xc.rows as u64, "x rows")?,
                    k: k32,
                    w_offset: to_u32(wr.skip, "weight offset")?,
                    x_offset: to_u32(xr.skip / 4, "x offset")?,
                    out_offset: to_u32(or.skip / 4, "output offset")?,
                    out_stride: m32,
                    out_col: to_u32(wc.first_row as u64, "output column")?,
                };
                let x_groups = (xc.rows as u64).div_ceil(ROWS_PER_THREAD);
                // matvec: a workgroup per MV_ROWS weight rows; main: an invocation per row.
                let groups = if matvec {
                    (wc.rows as u64).div_ceil(MATVEC_WEIGHT_ROWS) * x_groups
                } else {
                    (wc.rows as u64 * x_groups).div_ceil(WORKGROUP)
                };
                let groups = to_u32(groups, "workgroups")?;
                let storage = [
                    Bound {
                        buffer: w.raw(),
                        range: wr,
                    },
                    Bound {
                        buffer: x.raw(),
                        range: xr,
                    },
                    Bound {
                        buffer: bias.buffer,
                        range: bias.range,
                    },
                    Bound {
                        buffer: out.raw(),
                        range: or,
                    },
                ];
                dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups));
            }
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}
