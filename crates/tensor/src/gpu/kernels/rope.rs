//! `shaders/rope.wgsl`: rotary position embedding, adjacent pairs (`rope_normal`) or halves
//! (`rope_neox`). The cos/sin of every (token, pair) come precomputed from the host, which is
//! where the ggml modes differ; the shader only knows the two pair layouts.

use super::{Bound, prepare, submit, to_u32};
use crate::gpu::GpuBuffer;
use crate::gpu::split::{RowLayout, plan_row_chunks};
use crate::{Result, TensorError};

/// Mirrors `RopeParams` in `shaders/rope.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RopeParams {
    /// Tokens in this chunk.
    pub n_tokens: u32,
    pub n_heads: u32,
    pub head_dim: u32,
    /// Rotated pairs per head (2 * n_pairs <= head_dim); the rest pass through.
    pub n_pairs: u32,
    pub x_offset: u32,
    pub out_offset: u32,
    /// In (cos, sin) pairs, from the table binding start.
    pub table_offset: u32,
    pub _pad: u32,
}

const WORKGROUP: u64 = 256;

/// Shape of a rope call: x is [n_tokens, n_heads, head_dim] f32.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RopeShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_pairs: usize,
}

/// Rotates `x` into `out`. `table` holds n_tokens × n_pairs (cos, sin) f32 pairs;
/// `entry` is `rope_normal` or `rope_neox`.
pub(crate) fn rope(
    entry: &'static str,
    x: &GpuBuffer,
    table: &GpuBuffer,
    shape: RopeShape,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = x.context();
    let RopeShape {
        n_tokens,
        n_heads,
        head_dim,
        n_pairs,
    } = shape;
    if 2 * n_pairs > head_dim {
        return Err(TensorError::ShapeMismatch {
            op: "rope",
            detail: format!("{n_pairs} rotated pairs do not fit in head_dim {head_dim}"),
        });
    }
    let row = n_heads * head_dim;
    if n_tokens == 0 || row == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline("rope", entry, &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let x_layout = RowLayout {
            base: 0,
            row_bytes: row as u64 * 4,
        };
        // A token with no rotated pair still needs a non-empty table row to bind.
        let t_layout = RowLayout {
            base: 0,
            row_bytes: n_pairs.max(1) as u64 * 8,
        };
        let max_tokens = ((1u64 << 30) / row as u64).max(1) as usize;
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(
            n_tokens,
            &[x_layout, t_layout, x_layout],
            limit,
            align,
            max_tokens,
        )? {
            let params = RopeParams {
                n_tokens: to_u32(c.rows as u64, "tokens")?,
                n_heads: to_u32(n_heads as u64, "heads")?,
                head_dim: to_u32(head_dim as u64, "head_dim")?,
                n_pairs: to_u32(n_pairs as u64, "pairs")?,
                x_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[2].skip / 4, "offset")?,
                table_offset: to_u32(c.ranges[1].skip / 8, "offset")?,
                _pad: 0,
            };
            let storage = [
                Bound {
                    buffer: x.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: table.raw(),
                    range: c.ranges[1],
                },
                Bound {
                    buffer: out.raw(),
                    range: c.ranges[2],
                },
            ];
            let elements = (c.rows * row) as u64;
            let groups = to_u32(elements.div_ceil(WORKGROUP), "workgroups")?;
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}
