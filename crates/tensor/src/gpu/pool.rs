//! Buffer pool: GPU buffers are recycled by size class instead of being created per op.
//!
//! A size class is the request rounded up to one of four steps per power of two (at most 25 %
//! waste). A released buffer goes back to its class's free list unless the pool already
//! caches `max_cached_bytes`, in which case it is dropped. Reuse is safe without waiting
//! because every use goes through the one queue, whose operations run in submission order.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a pooled buffer is used for (each kind has its own usage flags and free lists).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferKind {
    /// Tensor data: read and written by kernels, copied in and out.
    Storage,
    /// Host-readable staging for downloads.
    Readback,
}

impl BufferKind {
    fn usage(self) -> wgpu::BufferUsages {
        match self {
            BufferKind::Storage => {
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC
            }
            BufferKind::Readback => wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        }
    }
}

/// The size of a new pooled buffer for `len` bytes: its size class, or near the device's
/// maximum the exact (4-byte rounded) size, which still fits.
fn buffer_size(device: &wgpu::Device, len: u64) -> u64 {
    let class = size_class(len);
    if class > device.limits().max_buffer_size {
        len.div_ceil(4) * 4
    } else {
        class
    }
}

/// Smallest size class holding `len` bytes.
pub fn size_class(len: u64) -> u64 {
    const MIN: u64 = 256;
    if len <= MIN {
        return MIN;
    }
    let pow = 63 - (len - 1).leading_zeros(); // 2^pow < len <= 2^(pow+1)
    let step = 1u64 << (pow - 2); // quarter of the lower power of two
    len.div_ceil(step) * step
}

/// Hit and miss counters, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub reused: u64,
    pub created: u64,
    pub cached_bytes: u64,
}

pub struct BufferPool {
    free: Mutex<HashMap<(u64, BufferKind), Vec<wgpu::Buffer>>>,
    cached_bytes: AtomicU64,
    max_cached_bytes: u64,
    reused: AtomicU64,
    created: AtomicU64,
}

impl BufferPool {
    pub fn new(max_cached_bytes: u64) -> Self {
        Self {
            free: Mutex::new(HashMap::new()),
            cached_bytes: AtomicU64::new(0),
            max_cached_bytes,
            reused: AtomicU64::new(0),
            created: AtomicU64::new(0),
        }
    }

    /// A buffer of at least `len` bytes (usually `size_class(len)`); the caller checked `len`
    /// against the device's maximum buffer size.
    pub fn take(&self, device: &wgpu::Device, len: u64, kind: BufferKind) -> wgpu::Buffer {
        let class = buffer_size(device, len);
        let reused = self
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&(class, kind))
            .and_then(Vec::pop);
        if let Some(buffer) = reused {
            self.cached_bytes.fetch_sub(class, Ordering::Relaxed);
            self.reused.fetch_add(1, Ordering::Relaxed);
            return buffer;
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("mtmd pooled"),
            size: class,
            usage: kind.usage(),
            mapped_at_creation: false,
        })
    }

    /// A new storage buffer holding `bytes` (written through a mapping at creation, so no
    /// queue write is involved), sized so that it can join the pool later.
    pub fn create_filled(
        &self,
        device: &wgpu::Device,
        bytes: &[u8],
    ) -> crate::Result<wgpu::Buffer> {
        let padded = (bytes.len() as u64).div_ceil(4).max(1) * 4;
        let class = buffer_size(device, padded);
        self.created.fetch_add(1, Ordering::Relaxed);
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("mtmd upload"),
            size: class,
            usage: BufferKind::Storage.usage(),
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .slice(..padded)
                .get_mapped_range_mut()
                .map_err(|e| crate::TensorError::Gpu(format!("filling an upload: {e}")))?;
            // wgpu zeroes a buffer mapped at creation: the padding needs no write.
            view.slice(..bytes.len()).copy_from_slice(bytes);
        }
        buffer.unmap();
        Ok(buffer)
    }

    /// Returns a buffer from [`take`](Self::take) to its free list (or drops it when full).
    pub fn give_back(&self, buffer: wgpu::Buffer, kind: BufferKind) {
        let class = buffer.size();
        if self.cached_bytes.load(Ordering::Relaxed) + class > self.max_cached_bytes {
            // Dropped, not destroyed: a command buffer still being recorded may use it, and
            // wgpu frees it once no submitted work does.
            drop(buffer);
            return;
        }
        self.cached_bytes.fetch_add(class, Ordering::Relaxed);
        self.free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((class, kind))
            .or_default()
            .push(buffer);
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            reused: self.reused.load(Ordering::Relaxed),
            created: self.created.load(Ordering::Relaxed),
            cached_bytes: self.cached_bytes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_little_waste() {
        assert_eq!(size_class(0), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(512), 512);
        assert_eq!(size_class(513), 640);
        for len in [300u64, 1000, 4097, 1 << 20, (1 << 27) + 1, 3_000_000_017] {
            let c = size_class(len);
            assert!(c >= len && c.is_multiple_of(4), "{len} -> {c}");
            assert!(c as f64 <= len as f64 * 1.25 + 256.0, "{len} -> {c}");
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
