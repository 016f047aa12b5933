//! Host side of `shaders/attention.wgsl`: fused attention, one workgroup per (query, head)
//! for a few queries (decode), per (tile of queries, head) for many (prefill, encoders).
//! Queries and outputs are cut into chunks of whole rows under the binding limit; K, V and
//! the mask data are bound whole (every query needs every key).

use super::{Bound, prepare, submit, to_u32, whole};
use crate::gpu::GpuBuffer;
use crate::gpu::split::{RowLayout, plan_row_chunks};
use crate::{Result, TensorError};

/// Mirrors `AttentionParams` in `shaders/attention.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct AttentionParams {
    /// Queries in this chunk.
    pub n_q: u32,
    pub n_kv: u32,
    pub n_head: u32,
    pub n_kv_head: u32,
    pub head_dim: u32,
    pub q_offset: u32,
    pub out_offset: u32,
    /// Global index of the chunk's first query (into q_pos and q_group).
    pub q_base: u32,
    pub scale: f32,
    /// 0 = no soft cap.
    pub softcap: f32,
    pub causal: u32,
    /// Keys with `q_pos - k_pos >= window` are hidden; `i32::MAX` = no window.
    pub window: i32,
    pub has_groups: u32,
    /// Word offsets of k_pos, q_group and k_group in the mask data.
    pub k_pos_at: u32,
    pub q_group_at: u32,
    pub k_group_at: u32,
}

/// Largest head the shader's workgroup arrays hold.
pub(crate) const MAX_HEAD_DIM: usize = 256;
/// Queries per workgroup of the many-query entry point (`QT` in the shader).
const QUERY_TILE: usize = 16;
/// From this many queries on, the tiled entry point reads each K/V row once per tile of
/// queries; below it a tile would be mostly idle threads.
const MANY_QUERIES: usize = 8;

/// Geometry, mask and score transform of one attention call. `mask_data` holds, as i32
/// words: q_pos (n_q), k_pos (n_kv), then q_group (n_q) and k_group (n_kv) when `groups`.
pub(crate) struct AttnCall<'a> {
    pub n_q: usize,
    pub n_kv: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub softcap: f32,
    pub causal: bool,
    pub window: i32,
    pub groups: bool,
    pub mask_data: &'a GpuBuffer,
}

/// K or V rows on the GPU, f16 or f32.
pub(crate) struct KvBuf<'a> {
    pub buf: &'a GpuBuffer,
    pub f16: bool,
}

/// Runs attention of `q` `[n_q, n_head, d]` against the first `n_kv` rows of `k`, `v`
/// `[.., n_kv_head, d]` into `out` `[n_q, n_head, d]`.
pub(crate) fn attention(
    q: &GpuBuffer,
    k: KvBuf<'_>,
    v: KvBuf<'_>,
    call: &AttnCall<'_>,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = q.context();
    let d = call.head_dim;
    if d == 0 || d > MAX_HEAD_DIM {
        return Err(TensorError::ShapeMismatch {
            op: "attention",
            detail: format!("head_dim {d} outside 1..={MAX_HEAD_DIM} on the GPU"),
        });
    }
    if call.n_q == 0 || call.n_head == 0 {
        return Ok(());
    }
    let constants = [
        ("K_F16", f64::from(u8::from(k.f16))),
        ("V_F16", f64::from(u8::from(v.f16))),
    ];
    let many = call.n_q >= MANY_QUERIES;
    let entry = if many { "many_queries" } else { "main" };
    let pipeline = ctx.pipeline("attention", entry, &constants)?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    let kv_elems = call.n_kv * call.n_kv_head * d;
    let kv_range = |kv: &KvBuf<'_>, what: &str| {
        let bytes = kv_elems * if kv.f16 { 2 } else { 4 };
        let range = whole(bytes);
        if range.size > limit {
            return Err(TensorError::Gpu(format!(
                "attention: {what} rows of {bytes} bytes exceed the {limit}-byte binding limit"
            )));
        }
        Ok(range)
    };
    let (k_range, v_range) = (kv_range(&k, "K")?, kv_range(&v, "V")?);
    let mask_range = whole(call.mask_data.len_bytes());
    if mask_range.size > limit {
        return Err(TensorError::Gpu(
            "attention: mask data exceed the binding limit".into(),
        ));
    }
    ctx.capture(|| {
        let row = RowLayout {
            base: 0,
            row_bytes: (call.n_head * d) as u64 * 4,
        };
        // Workgroups (queries x heads) per dispatch stay in u32.
        let max_rows = ((1usize << 30) / call.n_head).max(1);
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(call.n_q, &[row, row], limit, align, max_rows)? {
            let params = AttentionParams {
                n_q: to_u32(c.rows as u64, "queries")?,
                n_kv: to_u32(call.n_kv as u64, "keys")?,
                n_head: to_u32(call.n_head as u64, "heads")?,
                n_kv_head: to_u32(call.n_kv_head as u64, "kv heads")?,
                head_dim: to_u32(d as u64, "head_dim")?,
                q_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                q_base: to_u32(c.first_row as u64, "query")?,
                scale: call.scale,
                softcap: call.softcap,
                causal: u32::from(call.causal),
                window: call.window,
                has_groups: u32::from(call.groups),
                k_pos_at: to_u32(call.n_q as u64, "offset")?,
                q_group_at: to_u32((call.n_q + call.n_kv) as u64, "offset")?,
                k_group_at: to_u32((2 * call.n_q + call.n_kv) as u64, "offset")?,
            };
            let storage = [
                Bound {
                    buffer: q.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: k.buf.raw(),
                    range: k_range,
                },
                Bound {
                    buffer: v.buf.raw(),
                    range: v_range,
                },
                Bound {
                    buffer: call.mask_data.raw(),
                    range: mask_range,
                },
                Bound {
                    buffer: out.raw(),
                    range: c.ranges[1],
                },
            ];
            let items = if many {
                c.rows.div_ceil(QUERY_TILE)
            } else {
                c.rows
            };
            let groups = to_u32((items * call.n_head) as u64, "workgroups")?;
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, groups));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}
