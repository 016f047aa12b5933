//! Host side of `shaders/grid.wgsl`: im2col, token-grid average pool and bilinear resize,
//! one thread per output value. Input and output are each bound whole; callers keep them
//! under the binding limit (`gpu::ops` falls back to the host kernels above it).

use super::{Bound, prepare, submit, to_u32, whole};
use crate::gpu::GpuBuffer;
use crate::{Result, TensorError};

/// Mirrors `GridParams` in `shaders/grid.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GridParams {
    /// Output values.
    pub total: u32,
    /// Image channels (im2col) or row width (grid ops).
    pub c: u32,
    pub h: u32,
    pub w: u32,
    pub oh: u32,
    pub ow: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride_y: u32,
    pub stride_x: u32,
    pub pad_y: u32,
    pub pad_x: u32,
    pub dil_y: u32,
    pub dil_x: u32,
    pub k: u32,
    pub _pad: u32,
}

/// Runs entry `entry` of the grid shader from `src` (`src_len` f32) into `out`.
pub(crate) fn grid(
    entry: &'static str,
    src: &GpuBuffer,
    src_len: usize,
    params: &GridParams,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = src.context();
    if params.total == 0 {
        return Ok(());
    }
    let limit = ctx.binding_limit();
    let (src_range, out_range) = (whole(src_len * 4), whole(params.total as usize * 4));
    if src_range.size > limit || out_range.size > limit {
        return Err(TensorError::Gpu(format!(
            "{entry}: {src_len} input / {} output values exceed the {limit}-byte binding limit",
            params.total
        )));
    }
    let pipeline = ctx.pipeline("grid", entry, &[])?;
    ctx.capture(|| {
        let storage = [
            Bound {
                buffer: src.raw(),
                range: src_range,
            },
            Bound {
                buffer: out.raw(),
                range: out_range,
            },
        ];
        let groups = to_u32(u64::from(params.total).div_ceil(64), "workgroups")?;
        submit(ctx, &[prepare(ctx, &pipeline, &storage, params, groups)])?;
        Ok(())
    })
}
