use std::ops::Deref;
use std::sync::Arc;

/// 64-byte aligned heap bytes, so any element type (and SIMD loads) can view them.
#[derive(Clone)]
pub struct HostBytes {
    chunks: Arc<Vec<Chunk>>,
    len: usize,
}

#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Chunk([u8; 64]);

impl HostBytes {
    pub fn zeroed(len: usize) -> Self {
        Self {
            chunks: Arc::new(vec![Chunk([0; 64]); len.div_ceil(64)]),
            len,
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut out = Self::zeroed(bytes.len());
        out.make_mut().copy_from_slice(bytes);
        out
    }

    pub fn from_f32(values: &[f32]) -> Self {
        Self::from_bytes(bytemuck::cast_slice(values))
    }

    /// Mutable access; copies first if the bytes are shared (copy-on-write).
    pub fn make_mut(&mut self) -> &mut [u8] {
        let chunks = Arc::make_mut(&mut self.chunks);
        &mut bytemuck::cast_slice_mut::<Chunk, u8>(chunks)[..self.len]
    }
}

impl Deref for HostBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &bytemuck::cast_slice::<Chunk, u8>(&self.chunks)[..self.len]
    }
}

/// Where a tensor's bytes live.
#[derive(Clone)]
pub enum Storage {
    /// Owned by the process heap (activations, converted weights).
    Host(HostBytes),
    /// Borrowed in place from a GGUF file's memory map (weights, never copied).
    Mapped(gguf::MappedBytes),
    /// A buffer on the GPU.
    #[cfg(feature = "gpu")]
    Gpu(crate::gpu::GpuBuffer),
}

impl Storage {
    /// The host-visible bytes, or `None` for GPU storage.
    pub fn host_bytes(&self) -> Option<&[u8]> {
        match self {
            Storage::Host(b) => Some(b),
            Storage::Mapped(b) => Some(b),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => None,
        }
    }

    pub fn len_bytes(&self) -> usize {
        match self {
            Storage::Host(b) => b.len(),
            Storage::Mapped(b) => b.len(),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.len_bytes(),
        }
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Storage::Host(_) | Storage::Mapped(_) => "cpu",
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => "gpu",
        }
    }
}
