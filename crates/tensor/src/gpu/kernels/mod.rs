//! Host side of the WGSL kernels: one file per `shaders/<family>.wgsl`, each with the
//! `#[repr(C)]` mirror of its params struct and the code that splits and dispatches work.
//!
//! Kernels work on raw buffers and element counts; `gpu::ops` checks tensors and shapes.
//! Bindings follow one order everywhere: inputs, output, then the uniform params.

mod attention;
mod elementwise;
mod grid;
mod matmul;
mod nn;
mod rope;
mod rows;

pub use attention::AttentionParams;
pub use elementwise::{BinaryParams, UnaryParams};
pub use grid::GridParams;
pub use matmul::MatmulParams;
pub use nn::{GluParams, LayerNormParams, PointwiseParams, WriteRowsParams};
pub use rope::RopeParams;
pub use rows::{RmsNormParams, SoftmaxParams};

pub(crate) use attention::{AttnCall, KvBuf, MAX_HEAD_DIM, attention};
pub(crate) use elementwise::{binary, unary};
pub(crate) use grid::grid;
pub(crate) use matmul::{Epilogue, matmul, weight_type_constant};
pub(crate) use nn::{
    NormAffine, RopeOnWrite, clear, copy_ranges, glu, layer_norm, pointwise, write_rows_f16,
};
pub(crate) use rope::{RopeShape, rope};
pub(crate) use rows::{rms_norm, softmax};

use std::num::NonZeroU64;
use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::context::GpuContext;
use super::pipelines::Pipeline;
use super::split::{BindRange, grid_2d};
use crate::{Result, TensorError};

/// A buffer sub-range to bind as one storage binding.
pub(crate) struct Bound<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub range: BindRange,
}

/// The whole first `len` bytes of a buffer.
pub(crate) fn whole(len: usize) -> BindRange {
    BindRange {
        offset: 0,
        size: (len as u64).div_ceil(4).max(1) * 4,
        skip: 0,
    }
}

/// Converts a count or offset to the `u32` the shaders use.
pub(crate) fn to_u32(v: u64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| TensorError::Gpu(format!("{what} = {v} does not fit in u32")))
}

/// One recorded dispatch: pipeline, its bind group and the number of workgroups.
pub(crate) struct Dispatch {
    pipeline: Arc<Pipeline>,
    bind_group: wgpu::BindGroup,
    groups: u32,
}

/// Binds `storage` (inputs then output) and `params` for one dispatch of `groups` workgroups.
pub(crate) fn prepare<P: bytemuck::Pod>(
    ctx: &GpuContext,
    pipeline: &Arc<Pipeline>,
    storage: &[Bound<'_>],
    params: &P,
    groups: u32,
) -> Dispatch {
    let device = ctx.device();
    let uniform = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("mtmd params"),
        contents: bytemuck::bytes_of(params),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let mut entries: Vec<wgpu::BindGroupEntry<'_>> = storage
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: b.buffer,
                offset: b.range.offset,
                size: NonZeroU64::new(b.range.size),
            }),
        })
        .collect();
    entries.push(wgpu::BindGroupEntry {
        binding: storage.len() as u32,
        resource: uniform.as_entire_binding(),
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.layout,
        entries: &entries,
    });
    Dispatch {
        pipeline: pipeline.clone(),
        bind_group,
        groups,
    }
}

/// Records every dispatch into one compute pass of the device's open command buffer.
pub(crate) fn submit(ctx: &GpuContext, dispatches: &[Dispatch]) -> Result<()> {
    ctx.record(dispatches.len(), |encoder| {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        for d in dispatches {
            let (x, y) = grid_2d(d.groups, ctx.max_workgroups());
            pass.set_pipeline(&d.pipeline.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(x, y, 1);
        }
    })
}
