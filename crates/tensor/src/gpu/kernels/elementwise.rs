//! `shaders/binary.wgsl` (add, mul with row broadcast) and `shaders/unary.wgsl` (activations).

use super::{Bound, prepare, submit, to_u32, whole};
use crate::gpu::GpuBuffer;
use crate::gpu::split::{RowLayout, plan_row_chunks};
use crate::{Result, TensorError};

/// Mirrors `BinaryParams` in `shaders/binary.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BinaryParams {
    /// Elements in this chunk.
    pub len: u32,
    /// `b` repeats every `b_len` elements (its length when broadcast, else `len`).
    pub b_len: u32,
    pub a_offset: u32,
    pub b_offset: u32,
    pub out_offset: u32,
    pub _pad: [u32; 3],
}

/// Mirrors `UnaryParams` in `shaders/unary.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct UnaryParams {
    pub len: u32,
    pub in_offset: u32,
    pub out_offset: u32,
    pub _pad: u32,
}

const WORKGROUP: u64 = 256;
/// Elements per dispatch, so that counts and offsets stay in `u32`.
const MAX_CHUNK: u64 = 1 << 30;

/// `out[i] = a[i] (entry) b[i % b_len]` over `a_len` f32 elements; `b_len` divides `a_len`.
pub(crate) fn binary(
    entry: &'static str,
    a: &GpuBuffer,
    a_len: usize,
    b: &GpuBuffer,
    b_len: usize,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = a.context();
    if a_len == 0 {
        return Ok(());
    }
    if b_len == 0 || !a_len.is_multiple_of(b_len) {
        return Err(TensorError::ShapeMismatch {
            op: entry,
            detail: format!("{b_len} elements cannot repeat over {a_len}"),
        });
    }
    let pipeline = ctx.pipeline("binary", entry, &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let mut dispatches = Vec::new();
        if b_len == a_len {
            // Same shape: cut all three the same way, one element per "row".
            let l = RowLayout { base: 0, row_bytes: 4 };
            for c in plan_row_chunks(a_len, &[l, l, l], limit, align, MAX_CHUNK as usize)? {
                let params = BinaryParams {
                    len: to_u32(c.rows as u64, "elements")?,
                    b_len: to_u32(c.rows as u64, "elements")?,
                    a_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                    b_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                    out_offset: to_u32(c.ranges[2].skip / 4, "offset")?,
                    _pad: [0; 3],
                };
                let storage = [
                    Bound { buffer: a.raw(), range: c.ranges[0] },
                    Bound { buffer: b.raw(), range: c.ranges[1] },
                    Bound { buffer: out.raw(), range: c.ranges[2] },
                ];
                let groups = to_u32((c.rows as u64).div_ceil(WORKGROUP), "workgroups")?;
                dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups));
            }
        } else {
            // Broadcast: `b` is bound whole; `a` and `out` are cut into whole repeats of it.
            let b_range = whole(b_len * 4);
            if b_range.size > limit {
                return Err(TensorError::Gpu(format!(
                    "{entry}: a broadcast operand of {b_len} f32 exceeds the {limit}-byte binding limit"
                )));
            }
            let l = RowLayout { base: 0, row_bytes: b_len as u64 * 4 };
            let max_rows = (MAX_CHUNK / b_len as u64).max(1) as usize;
            for c in plan_row_chunks(a_len / b_len, &[l, l], limit, align, max_rows)? {
                let len = c.rows as u64 * b_len as u64;
                let params = BinaryParams {
                    len: to_u32(len, "elements")?,
                    b_len: to_u32(b_len as u64, "broadcast length")?,
                    a_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                    b_offset: 0,
                    out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                    _pad: [0; 3],
                };
                let storage = [
                    Bound { buffer: a.raw(), range: c.ranges[0] },
                    Bound { buffer: b.raw(), range: b_range },
                    Bound { buffer: out.raw(), range: c.ranges[1] },
                ];
                let groups = to_u32(len.div_ceil(WORKGROUP), "workgroups")?;
                dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups));
            }
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}

/// `out[i] = entry(x[i])` over `len` f32 elements.
pub(crate) fn unary(entry: &'static str, x: &GpuBuffer, len: usize, out: &GpuBuffer) -> Result<()> {
    let ctx = x.context();
    if len == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline("unary", entry, &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let mut dispatches = Vec::new();
        let l = RowLayout {
            base: 0,
            row_bytes: 4,
        };
        for c in plan_row_chunks(len, &[l, l], limit, align, MAX_CHUNK as usize)? {
            let params = UnaryParams {
                len: to_u32(c.rows as u64, "elements")?,
                in_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                _pad: 0,
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
            let groups = to_u32((c.rows as u64).div_ceil(WORKGROUP), "workgroups")?;
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}
