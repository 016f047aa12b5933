//! The wgpu backend (Vulkan only) and its WGSL kernels (`crates/tensor/shaders/`, embedded with `include_str!`).
//!
//! - [`GpuContext`]: adapter choice (a software adapter only with `MTMD_GPU_ALLOW_CPU_ADAPTER=1`),
//!   device, buffer pool, pipeline cache keyed per op variant, uploads and downloads.
//! - [`GpuBuffer`]: the bytes of a tensor in `Storage::Gpu`, recycled through the pool on drop.
//! - [`ops`]: tensor-level ops on GPU tensors, same contracts as `tensor::ops`.
//! - `kernels`: the host side of each shader (params mirror, splitting, dispatch).
//!
//! Storage bindings are limited (128 MiB by default): tensors above the limit are bound as
//! several sub-ranges of whole rows (see [`split`]). Dispatches above 65535 workgroups use a
//! 2-D grid.

mod context;
mod kernels;
pub mod ops;
mod ops_grid;
mod ops_nn;
mod pipelines;
mod pool;
pub mod split;
mod transfer;

use std::sync::Arc;

pub use context::{ALLOW_CPU_ADAPTER_ENV, GpuContext, GpuFault};
pub use kernels::{
    AttentionParams, BinaryParams, GluParams, LayerNormParams, MatmulParams, PointwiseParams,
    RmsNormParams, RopeParams, SoftmaxParams, UnaryParams, WriteRowsParams,
};
pub use pipelines::{PRELUDE, SHADERS, module_source};
pub use pool::PoolStats;

use crate::{DType, Result, Tensor, TensorError};
use pool::BufferKind;

/// A device buffer returned to the pool when the last handle drops.
struct Pooled {
    buffer: Option<wgpu::Buffer>,
    ctx: GpuContext,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.ctx.shared.pool.give_back(b, BufferKind::Storage);
        }
    }
}

/// The bytes of one tensor on the GPU (`len` bytes at offset 0 of a pooled buffer, which may
/// be larger). Cloning shares the buffer.
#[derive(Clone)]
pub struct GpuBuffer {
    data: Arc<Pooled>,
    len: usize,
}

impl GpuBuffer {
    pub(crate) fn new(ctx: GpuContext, buffer: wgpu::Buffer, len: usize) -> Self {
        Self {
            data: Arc::new(Pooled {
                buffer: Some(buffer),
                ctx,
            }),
            len,
        }
    }

    /// Bytes of tensor data.
    pub fn len_bytes(&self) -> usize {
        self.len
    }

    /// The device this buffer lives on.
    pub fn context(&self) -> &GpuContext {
        &self.data.ctx
    }

    pub(crate) fn raw(&self) -> &wgpu::Buffer {
        // Only `Drop` takes the buffer out.
        self.data
            .buffer
            .as_ref()
            .expect("pooled buffer present until drop")
    }

    /// Copies the tensor bytes back to the host (waits for queued work).
    pub fn read_bytes(&self) -> Result<Vec<u8>> {
        self.context().download(self)
    }

    /// Every element of `t` (whose storage is this buffer) as f32, dequantizing on the host.
    pub fn read_tensor_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        whole_buffer_check(t, self, "read")?;
        let bytes = self.read_bytes()?;
        if t.dtype() == DType::F32 {
            return Ok(bytemuck::pod_collect_to_vec(&bytes));
        }
        let mut out = vec![0f32; t.numel()];
        crate::quant::dequantize(t.dtype(), &bytes, &mut out)?;
        Ok(out)
    }
}

/// GPU tensors must be the whole of their buffer: contiguous, from offset 0. (A view made by
/// `narrow` covers fewer bytes than its buffer, so this also rules out offsets.)
pub(crate) fn whole_buffer_check(t: &Tensor, buf: &GpuBuffer, op: &str) -> Result<()> {
    let needed = t.dtype().row_bytes(t.numel() as u64).unwrap_or(u64::MAX);
    if !t.is_contiguous() || needed != buf.len_bytes() as u64 {
        return Err(TensorError::InvalidView(format!(
            "{op}: GPU tensors must be whole contiguous buffers; got a view {t:?}"
        )));
    }
    Ok(())
}
