//! Moving tensors between host and GPU storage.

use super::{GpuBuffer, GpuContext, whole_buffer_check};
use crate::storage::{HostBytes, Storage};
use crate::{Device, Result, Tensor};

impl Tensor {
    /// This tensor on `device`: uploads host data (any dtype; quantized blocks are copied as
    /// stored), downloads GPU data, or returns a cheap clone when it is already there.
    pub fn to_device(&self, device: &Device) -> Result<Tensor> {
        match device {
            Device::Cpu => self.to_host(),
            Device::Gpu(ctx) => self.to_gpu(ctx),
        }
    }

    /// A copy on the host (a cheap clone when already there).
    pub fn to_host(&self) -> Result<Tensor> {
        let Storage::Gpu(buf) = self.storage() else {
            return Ok(self.clone());
        };
        whole_buffer_check(self, buf, "to_host")?;
        let bytes = buf.read_bytes()?;
        Tensor::new(
            self.dtype(),
            self.shape(),
            Storage::Host(HostBytes::from_bytes(&bytes)),
        )
    }

    /// A copy on the GPU of `ctx` (a cheap clone when already on that device).
    pub fn to_gpu(&self, ctx: &GpuContext) -> Result<Tensor> {
        if let Storage::Gpu(buf) = self.storage() {
            if buf.context().same_device(ctx) {
                return Ok(self.clone());
            }
            return self.to_host()?.to_gpu(ctx);
        }
        let host = self.contiguous()?;
        let buf = ctx.upload(host.host_bytes()?)?;
        Tensor::new(self.dtype(), self.shape(), Storage::Gpu(buf))
    }

    /// The GPU buffer of a GPU tensor, or `None` for host storage.
    pub fn gpu_buffer(&self) -> Option<&GpuBuffer> {
        match self.storage() {
            Storage::Gpu(b) => Some(b),
            _ => None,
        }
    }
}
