//! The WGSL sources (embedded from `shaders/`) and pipeline construction.
//!
//! Every kernel module is the common prelude followed by one op-family file. Variants of a
//! kernel (e.g. the weight format of a matmul) are WGSL `override` constants or separate entry
//! points, so one file serves them all and the pipeline cache keys on (file, entry, constants).

use std::borrow::Cow;

use crate::{Result, TensorError};

/// Helpers shared by every kernel (`shaders/common.wgsl`).
pub const PRELUDE: &str = include_str!("../../shaders/common.wgsl");

/// Every op-family shader: (name, source without the prelude). The name is the file stem.
pub const SHADERS: &[(&str, &str)] = &[
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    ("binary", include_str!("../../shaders/binary.wgsl")),
    ("unary", include_str!("../../shaders/unary.wgsl")),
    ("rms_norm", include_str!("../../shaders/rms_norm.wgsl")),
    ("softmax", include_str!("../../shaders/softmax.wgsl")),
    ("rope", include_str!("../../shaders/rope.wgsl")),
    ("attention", include_str!("../../shaders/attention.wgsl")),
    ("layer_norm", include_str!("../../shaders/layer_norm.wgsl")),
    ("write_rows", include_str!("../../shaders/write_rows.wgsl")),
    ("pointwise", include_str!("../../shaders/pointwise.wgsl")),
    ("glu", include_str!("../../shaders/glu.wgsl")),
    ("geglu", include_str!("../../shaders/geglu.wgsl")),
    ("grid", include_str!("../../shaders/grid.wgsl")),
];

/// The full module text of shader `name` (prelude + file), or `None` for an unknown name.
pub fn module_source(name: &str) -> Option<String> {
    let body = SHADERS.iter().find(|(n, _)| *n == name)?.1;
    Some(format!("{PRELUDE}\n{body}"))
}

/// A compute pipeline and the layout of its only bind group.
pub(crate) struct Pipeline {
    pub pipeline: wgpu::ComputePipeline,
    pub layout: wgpu::BindGroupLayout,
}

pub(crate) fn build(
    device: &wgpu::Device,
    shader: &'static str,
    entry: &'static str,
    constants: &[(&'static str, f64)],
) -> Result<Pipeline> {
    let source = module_source(shader)
        .ok_or_else(|| TensorError::Gpu(format!("no shader named {shader:?}")))?;
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(shader),
        source: wgpu::ShaderSource::Wgsl(Cow::Owned(source)),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: None,
        module: &module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants,
            zero_initialize_workgroup_memory: true,
        },
        cache: None,
    });
    let layout = pipeline.get_bind_group_layout(0);
    Ok(Pipeline { pipeline, layout })
}
