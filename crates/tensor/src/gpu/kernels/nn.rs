//! Host side of the decoder/encoder helpers: `shaders/pointwise.wgsl` (scale, softcap),
//! `shaders/glu.wgsl` (SwiGLU), `shaders/geglu.wgsl` (ggml's table GEGLU),
//! `shaders/layer_norm.wgsl` and `shaders/write_rows.wgsl` (f32 rows into an f16 tensor).

use super::rope::RopeShape;
use super::rows::optional_binding;
use super::{Bound, prepare, submit, to_u32, whole};
use crate::gpu::split::{RowLayout, plan_row_chunks};
use crate::gpu::{GpuBuffer, GpuContext};
use crate::{Result, TensorError};

/// Mirrors `PointwiseParams` in `shaders/pointwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PointwiseParams {
    pub len: u32,
    pub in_offset: u32,
    pub out_offset: u32,
    /// The op's scalar (the factor of `scale`, the cap of `softcap`).
    pub value: f32,
}

/// Mirrors `GluParams` in `shaders/glu.wgsl` and `shaders/geglu.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GluParams {
    pub len: u32,
    pub gate_offset: u32,
    pub up_offset: u32,
    pub out_offset: u32,
}

/// Mirrors `LayerNormParams` in `shaders/layer_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct LayerNormParams {
    pub rows: u32,
    pub cols: u32,
    pub x_offset: u32,
    pub out_offset: u32,
    pub eps: f32,
    pub has_weight: u32,
    pub has_bias: u32,
    pub _pad: u32,
}

/// Mirrors `WriteRowsParams` in `shaders/write_rows.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct WriteRowsParams {
    /// Destination words touched.
    pub words: u32,
    /// f16 element, from the destination binding start, of the first written value.
    pub first: u32,
    /// Values written.
    pub len: u32,
    /// First source element, from the source binding start.
    pub src_offset: u32,
    /// Rope on the way (keys into the cache): heads per row, head size, rotated pairs per
    /// head and the chunk's first (cos, sin) pair in the table.
    pub n_heads: u32,
    pub head_dim: u32,
    pub n_pairs: u32,
    pub table_offset: u32,
}

/// Rope applied by `write_rows_f16` as it writes: the (cos, sin) table (`n_pairs.max(1)`
/// pairs per token) and the shape, with `neox` choosing the pairing.
pub(crate) struct RopeOnWrite<'a> {
    pub table: &'a GpuBuffer,
    pub shape: RopeShape,
    pub neox: bool,
}

const WORKGROUP: u64 = 256;
/// Elements per dispatch, so that counts and offsets stay in `u32`.
const MAX_CHUNK: usize = 1 << 30;

const ELEMENT: RowLayout = RowLayout {
    base: 0,
    row_bytes: 4,
};

fn groups(len: u64) -> Result<u32> {
    to_u32(len.div_ceil(WORKGROUP), "workgroups")
}

/// `out[i] = entry(x[i], value)` over `len` f32 (`entry` of `shaders/pointwise.wgsl`).
pub(crate) fn pointwise(
    entry: &'static str,
    x: &GpuBuffer,
    len: usize,
    value: f32,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = x.context();
    if len == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline("pointwise", entry, &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(len, &[ELEMENT, ELEMENT], limit, align, MAX_CHUNK)? {
            let params = PointwiseParams {
                len: to_u32(c.rows as u64, "elements")?,
                in_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                value,
            };
            let storage = [
                Bound {
                    buffer: x.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: out.raw(),
                    range: c.ranges[1],
                },
            ];
            let n = groups(c.rows as u64)?;
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, n));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}

/// `out = act(gate) * up` over `len` f32: `swiglu`, or `geglu_table` with `table` (the f16
/// GELU table on this device).
pub(crate) fn glu(
    gate: &GpuBuffer,
    up: &GpuBuffer,
    len: usize,
    table: Option<&wgpu::Buffer>,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = gate.context();
    if len == 0 {
        return Ok(());
    }
    let (shader, entry) = match table {
        Some(_) => ("geglu", "geglu_table"),
        None => ("glu", "swiglu"),
    };
    let pipeline = ctx.pipeline(shader, entry, &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let mut dispatches = Vec::new();
        let layouts = [ELEMENT, ELEMENT, ELEMENT];
        for c in plan_row_chunks(len, &layouts, limit, align, MAX_CHUNK)? {
            let params = GluParams {
                len: to_u32(c.rows as u64, "elements")?,
                gate_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                up_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[2].skip / 4, "offset")?,
            };
            let mut storage = vec![
                Bound {
                    buffer: gate.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: up.raw(),
                    range: c.ranges[1],
                },
            ];
            if let Some(t) = table {
                storage.push(Bound {
                    buffer: t,
                    range: whole(t.size() as usize),
                });
            }
            storage.push(Bound {
                buffer: out.raw(),
                range: c.ranges[2],
            });
            let n = groups(c.rows as u64)?;
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, n));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}

/// Optional per-column operands of a layer norm.
pub(crate) struct NormAffine<'a> {
    pub weight: Option<&'a GpuBuffer>,
    pub bias: Option<&'a GpuBuffer>,
}

/// `out = (x - mean) / sqrt(var + eps) (* weight) (+ bias)` per row of `cols` f32.
pub(crate) fn layer_norm(
    x: &GpuBuffer,
    rows: usize,
    cols: usize,
    affine: NormAffine<'_>,
    eps: f32,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = x.context();
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline("layer_norm", "main", &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let w = optional_binding(
            affine.weight.map(|w| (w, cols * 4)),
            x,
            limit,
            "layer_norm weight",
        )?;
        let b = optional_binding(
            affine.bias.map(|b| (b, cols * 4)),
            x,
            limit,
            "layer_norm bias",
        )?;
        let l = RowLayout {
            base: 0,
            row_bytes: cols as u64 * 4,
        };
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(rows, &[l, l], limit, align, 1 << 30)? {
            let params = LayerNormParams {
                rows: to_u32(c.rows as u64, "rows")?,
                cols: to_u32(cols as u64, "cols")?,
                x_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                eps,
                has_weight: u32::from(affine.weight.is_some()),
                has_bias: u32::from(affine.bias.is_some()),
                _pad: 0,
            };
            let storage = [
                Bound {
                    buffer: x.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: w.buffer,
                    range: w.range,
                },
                Bound {
                    buffer: b.buffer,
                    range: b.range,
                },
                Bound {
                    buffer: out.raw(),
                    range: c.ranges[1],
                },
            ];
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, params.rows));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}

/// Rows `first_row..first_row + n` of the f16 tensor in `dst` (rows of `width`) become the
/// `n` f32 rows of `src`, rounded to nearest-even f16.
pub(crate) fn write_rows_f16(
    src: &GpuBuffer,
    n: usize,
    width: usize,
    dst: &GpuBuffer,
    first_row: usize,
    rope: Option<RopeOnWrite<'_>>,
) -> Result<()> {
    let ctx = src.context();
    if n == 0 || width == 0 {
        return Ok(());
    }
    let mode = match &rope {
        None => 0.0,
        Some(r) if r.neox => 2.0,
        Some(_) => 1.0,
    };
    let pipeline = ctx.pipeline("write_rows", "write_rows_f16", &[("ROPE", mode)])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    let shape = rope.as_ref().map(|r| r.shape);
    if let Some(sh) = shape
        && (sh.n_tokens != n || sh.n_heads * sh.head_dim != width || 2 * sh.n_pairs > sh.head_dim)
    {
        return Err(TensorError::ShapeMismatch {
            op: "write_rows",
            detail: format!("rope of {sh:?} on {n} rows of {width}"),
        });
    }
    // Without rope the table binding is never read: a small shared stand-in fills it.
    let stand_in = ctx.constant_table("write_rows stand-in table", || vec![0u8; 16])?;
    ctx.capture(|| {
        let src_l = RowLayout {
            base: 0,
            row_bytes: width as u64 * 4,
        };
        let dst_l = RowLayout {
            base: first_row as u64 * width as u64 * 2,
            row_bytes: width as u64 * 2,
        };
        let table_l = RowLayout {
            base: 0,
            row_bytes: shape.map_or(4, |s| s.n_pairs.max(1) as u64 * 8),
        };
        let max_rows = (MAX_CHUNK / width).max(1);
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(n, &[src_l, dst_l, table_l], limit, align, max_rows)? {
            let first = c.ranges[1].skip / 2;
            let len = (c.rows * width) as u64;
            let words = (first + len).div_ceil(2) - first / 2;
            let params = WriteRowsParams {
                words: to_u32(words, "words")?,
                first: to_u32(first, "offset")?,
                len: to_u32(len, "elements")?,
                src_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                n_heads: shape.map_or(0, |s| s.n_heads as u32),
                head_dim: shape.map_or(1, |s| s.head_dim as u32),
                n_pairs: shape.map_or(0, |s| s.n_pairs as u32),
                table_offset: to_u32(c.ranges[2].skip / 8, "offset")?,
            };
            let table = match &rope {
                Some(r) => Bound {
                    buffer: r.table.raw(),
                    range: c.ranges[2],
                },
                None => Bound {
                    buffer: &stand_in,
                    range: whole(16),
                },
            };
            let storage = [
                Bound {
                    buffer: src.raw(),
                    range: c.ranges[0],
                },
                table,
                Bound {
                    buffer: dst.raw(),
                    range: c.ranges[1],
                },
            ];
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups(words)?));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}

/// Copies byte ranges between buffers on the queue: `(src_offset, dst_offset, len)`, all
/// multiples of 4. Used for row gathers and f32 row writes, which need no arithmetic.
pub(crate) fn copy_ranges(
    ctx: &GpuContext,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    ranges: &[(u64, u64, u64)],
) -> Result<()> {
    if let Some(bad) = ranges.iter().find(|(s, d, n)| {
        (s | d | n) % 4 != 0 || s + n > src.len_bytes() as u64 || d + n > dst.len_bytes() as u64
    }) {
        return Err(TensorError::Gpu(format!(
            "copy of {} bytes from {} to {} is unaligned or out of range",
            bad.2, bad.0, bad.1
        )));
    }
    ctx.record(0, |encoder| {
        for &(s, d, n) in ranges.iter().filter(|r| r.2 > 0) {
            encoder.copy_buffer_to_buffer(src.raw(), s, dst.raw(), d, n);
        }
    })
}

/// Zeroes the whole buffer (its padding too).
pub(crate) fn clear(ctx: &GpuContext, buf: &GpuBuffer) -> Result<()> {
    ctx.record(0, |encoder| encoder.clear_buffer(buf.raw(), 0, None))
}
