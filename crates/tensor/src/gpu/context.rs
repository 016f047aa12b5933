//! The GPU context: adapter choice, device and queue, buffer pool, pipeline cache, transfers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::GpuBuffer;
use super::pipelines::{self, Pipeline};
use super::pool::{BufferKind, BufferPool, PoolStats};
use crate::{Result, TensorError};

/// Set to `1` to accept a CPU-type (software, e.g. lavapipe) Vulkan adapter as a GPU.
pub const ALLOW_CPU_ADAPTER_ENV: &str = "MTMD_GPU_ALLOW_CPU_ADAPTER";

/// Free buffers the pool may keep for reuse.
const POOL_CACHE_BYTES: u64 = 512 << 20;

/// Everything one device owns; shared by every [`GpuContext`] handle and every buffer on it.
pub(crate) struct Shared {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub pool: BufferPool,
    pipelines: Mutex<HashMap<String, Arc<Pipeline>>>,
    /// Read-only lookup tables uploaded once per device (e.g. the f16 GELU table).
    tables: Mutex<HashMap<&'static str, Arc<wgpu::Buffer>>>,
    pub offset_align: u64,
    pub max_workgroups: u32,
    pub max_binding: u64,
    /// Compute dispatches and submits recorded so far (for `mtmd bench`'s per-token figures).
    pub dispatches: std::sync::atomic::AtomicU64,
    pub submits: std::sync::atomic::AtomicU64,
    pub downloads: std::sync::atomic::AtomicU64,
    /// The command buffer being recorded: kernels append to it and it goes to the queue only
    /// when the host needs a result (a download), before a queue write (an upload), or when
    /// it holds [`FLUSH_DISPATCHES`] dispatches. A decoded token is one submit, not hundreds.
    pending: Mutex<Pending>,
    /// Why the device was lost, once it was (wgpu's callback, or an injected fault).
    lost: Arc<Mutex<Option<String>>>,
    /// An injected out-of-memory fault: allocations still allowed before they fail
    /// (`u64::MAX`: none injected).
    allocs_before_oom: std::sync::atomic::AtomicU64,
}

/// A device failure to simulate, so that tests can check what users get when a real GPU
/// fails mid-run (see [`GpuContext::inject_fault`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuFault {
    /// Allocations fail once `n` more have succeeded, until the fault is cleared.
    OutOfMemoryAfter(u64),
    /// The device is lost now: every later call fails.
    Lost,
}

/// The open command encoder and how many dispatches it holds.
#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: usize,
}

/// Dispatches one command buffer may collect before it is submitted anyway: bounds the
/// bind groups and parameter buffers held while recording a long prefill or an image encode,
/// and lets a real GPU start before the host has recorded everything.
const FLUSH_DISPATCHES: usize = 2048;

/// A handle on a GPU device (cheap to clone). `binding_limit` is how many bytes one storage
/// binding may cover; ops split tensors above it.
#[derive(Clone)]
pub struct GpuContext {
    pub(crate) shared: Arc<Shared>,
    binding_limit: u64,
}

fn device_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 4,
        wgpu::DeviceType::IntegratedGpu => 3,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 1,
        wgpu::DeviceType::Cpu => 0,
    }
}

impl GpuContext {
    /// Opens the best Vulkan adapter. A CPU-type adapter counts only when
    /// `MTMD_GPU_ALLOW_CPU_ADAPTER=1`. Never panics: no adapter is an `Err`.
    pub fn new() -> Result<Self> {
        let allow_cpu = std::env::var(ALLOW_CPU_ADAPTER_ENV).is_ok_and(|v| v == "1");
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN;
        desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
        if adapters.is_empty() {
            return Err(TensorError::Gpu("no Vulkan adapter found".into()));
        }
        let software: Vec<String> = adapters
            .iter()
            .map(|a| a.get_info())
            .filter(|i| i.device_type == wgpu::DeviceType::Cpu)
            .map(|i| i.name)
            .collect();
        let Some(adapter) = adapters
            .into_iter()
            .filter(|a| allow_cpu || a.get_info().device_type != wgpu::DeviceType::Cpu)
            .max_by_key(|a| device_rank(a.get_info().device_type))
        else {
            return Err(TensorError::Gpu(format!(
                "only a software Vulkan adapter ({}) was found; set {ALLOW_CPU_ADAPTER_ENV}=1 to use it",
                software.join(", ")
            )));
        };
        let info = adapter.get_info();
        let limits = adapter.limits();
        // unpack2x16float (f16 weights and block scales) needs it; WebGPU-compliant adapters have it.
        if !adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::SHADER_F16_IN_F32)
        {
            return Err(TensorError::Gpu(format!(
                "{} cannot unpack f16 in shaders",
                info.name
            )));
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("mtmd"),
            required_features: wgpu::Features::empty(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| TensorError::Gpu(format!("opening {}: {e}", info.name)))?;
        // Ops check their own errors with error scopes; anything else is a bug worth a line on
        // stderr, not a panic in a library.
        device.on_uncaptured_error(Arc::new(|e| {
            eprintln!("mtmd gpu: uncaptured wgpu error: {e}")
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let on_lost = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut lost = on_lost.lock().unwrap_or_else(|e| e.into_inner());
            lost.get_or_insert(format!("{message} ({reason:?})"));
        });
        let max_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let shared = Shared {
            device,
            queue,
            info,
            pool: BufferPool::new(POOL_CACHE_BYTES),
            pipelines: Mutex::new(HashMap::new()),
            tables: Mutex::new(HashMap::new()),
            offset_align: u64::from(limits.min_storage_buffer_offset_alignment),
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            max_binding,
            dispatches: Default::default(),
            submits: Default::default(),
            downloads: Default::default(),
            pending: Mutex::new(Pending::default()),
            lost,
            allocs_before_oom: std::sync::atomic::AtomicU64::new(u64::MAX),
        };
        Ok(Self {
            shared: Arc::new(shared),
            binding_limit: max_binding,
        })
    }

    /// The adapter's name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`.
    pub fn adapter_name(&self) -> &str {
        &self.shared.info.name
    }

    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.shared.info
    }

    /// Largest storage binding the ops use, in bytes.
    pub fn binding_limit(&self) -> u64 {
        self.binding_limit
    }

    /// The same device, but ops split tensors as if one binding could hold only `bytes`
    /// (clamped to the device limit). Tests use it to exercise the split paths on small data.
    pub fn with_binding_limit(&self, bytes: u64) -> Self {
        Self {
            shared: self.shared.clone(),
            binding_limit: bytes.min(self.shared.max_binding),
        }
    }

    /// Buffers read back to the host on this device so far (a whole-device encode reads one:
    /// its embeddings).
    pub fn downloads(&self) -> u64 {
        self.shared
            .downloads
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Compute dispatches and queue submits recorded on this device so far.
    pub fn work_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.shared.dispatches.load(Relaxed),
            self.shared.submits.load(Relaxed),
        )
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.shared.pool.stats()
    }

    /// Whether both handles drive the same device (buffers can be mixed).
    pub fn same_device(&self, other: &GpuContext) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }

    pub(crate) fn offset_align(&self) -> u64 {
        self.shared.offset_align
    }

    pub(crate) fn max_workgroups(&self) -> u32 {
        self.shared.max_workgroups
    }

    pub(crate) fn device(&self) -> &wgpu::Device {
        &self.shared.device
    }

    /// An uninitialised device buffer for `len` bytes of tensor data.
    pub(crate) fn alloc(&self, len: usize) -> Result<GpuBuffer> {
        let padded = self.checked_size(len)?;
        self.check_injected_oom(len)?;
        let buffer = self.capture(|| {
            Ok(self
                .shared
                .pool
                .take(&self.shared.device, padded, BufferKind::Storage))
        })?;
        Ok(GpuBuffer::new(self.clone(), buffer, len))
    }

    /// `len` rounded up to whole 4-byte words, if one buffer of the device can hold it.
    fn checked_size(&self, len: usize) -> Result<u64> {
        self.alive()?;
        let padded = (len as u64).div_ceil(4).max(1) * 4;
        let max = self.shared.device.limits().max_buffer_size;
        if padded > max {
            return Err(TensorError::Gpu(format!(
                "a tensor of {len} bytes is larger than the device's {max}-byte buffer limit"
            )));
        }
        Ok(padded)
    }

    /// Copies `bytes` into a new device buffer.
    pub fn upload(&self, bytes: &[u8]) -> Result<GpuBuffer> {
        self.checked_size(bytes.len())?;
        let pending = self.lock_pending();
        if pending.encoder.is_some() {
            self.check_injected_oom(bytes.len())?;
            // A queue write would run before the commands recorded so far, which may still
            // use a pooled buffer's previous contents: fill a new buffer instead (this is
            // how the small per-layer tables of a step, positions and rope angles, go up).
            let shared = &self.shared;
            let buffer = self.capture(|| shared.pool.create_filled(&shared.device, bytes))?;
            return Ok(GpuBuffer::new(self.clone(), buffer, bytes.len()));
        }
        let buf = self.alloc(bytes.len())?;
        // Queue writes must be whole 4-byte words: write the aligned part, then a padded tail.
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.shared
                .queue
                .write_buffer(buf.raw(), 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.shared
                .queue
                .write_buffer(buf.raw(), whole as u64, &tail);
        }
        Ok(buf)
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Appends commands to the device's open command buffer (`dispatches` of them compute
    /// dispatches). Commands of every thread go into the one buffer in the order recorded,
    /// which is the order the device runs them.
    pub(crate) fn record(
        &self,
        dispatches: usize,
        f: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<()> {
        self.alive()?;
        let mut pending = self.lock_pending();
        let device = &self.shared.device;
        let encoder = pending.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("mtmd commands"),
            })
        });
        f(encoder);
        pending.dispatches += dispatches;
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.dispatches.fetch_add(dispatches as u64, Relaxed);
        if pending.dispatches >= FLUSH_DISPATCHES {
            self.submit_pending(&mut pending)?;
        }
        Ok(())
    }

    /// Submits what is recorded so far (without waiting for it). Downloads and uploads do
    /// this themselves; a caller flushes at the end of a step so the device starts at once.
    pub fn flush(&self) -> Result<()> {
        let mut pending = self.lock_pending();
        self.submit_pending(&mut pending)
    }

    /// Submits `pending` (under its lock, so submits keep the order commands were recorded).
    fn submit_pending(&self, pending: &mut Pending) -> Result<()> {
        let Some(encoder) = pending.encoder.take() else {
            return Ok(());
        };
        pending.dispatches = 0;
        // A lost device runs nothing: what was recorded is dropped with the error.
        self.alive()?;
        self.capture(|| {
            self.shared.queue.submit([encoder.finish()]);
            Ok(())
        })?;
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.submits.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Copies a buffer's tensor bytes back to the host (waits for queued work).
    pub(crate) fn download(&self, buf: &GpuBuffer) -> Result<Vec<u8>> {
        let len = buf.len_bytes();
        if len == 0 {
            return Ok(Vec::new());
        }
        self.shared
            .downloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let padded = (len as u64).div_ceil(4) * 4;
        let shared = &self.shared;
        let staging = shared
            .pool
            .take(&shared.device, padded, BufferKind::Readback);
        self.record(0, |encoder| {
            encoder.copy_buffer_to_buffer(buf.raw(), 0, &staging, 0, padded)
        })?;
        self.flush()?;
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..padded, move |r| {
            let _ = tx.send(r);
        });
        shared
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| {
                self.alive()
                    .err()
                    .unwrap_or_else(|| TensorError::Gpu(format!("waiting for a download: {e}")))
            })?;
        self.alive()?;
        rx.recv()
            .map_err(|_| TensorError::Gpu("download callback never ran".into()))?
            .map_err(|e| TensorError::Gpu(format!("mapping a download: {e}")))?;
        let out = {
            let view = staging
                .get_mapped_range(..padded)
                .map_err(|e| TensorError::Gpu(format!("reading a download: {e}")))?;
            view[..len].to_vec()
        };
        staging.unmap();
        shared.pool.give_back(staging, BufferKind::Readback);
        Ok(out)
    }

    /// The compiled pipeline for `entry` of shader `shader` with override `constants`, built
    /// once per variant.
    pub(crate) fn pipeline(
        &self,
        shader: &'static str,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<Arc<Pipeline>> {
        let key = format!("{shader}:{entry}:{constants:?}");
        let mut cache = self
            .shared
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&key) {
            return Ok(p.clone());
        }
        let built =
            self.capture(|| pipelines::build(&self.shared.device, shader, entry, constants))?;
        let built = Arc::new(built);
        cache.insert(key, built.clone());
        Ok(built)
    }

    /// The read-only storage buffer `name`, uploaded from `bytes()` on first use and kept for
    /// the device's lifetime. (A raw buffer, not a `GpuBuffer`: one of those would hold the
    /// device alive from inside it.)
    pub(crate) fn constant_table(
        &self,
        name: &'static str,
        bytes: impl FnOnce() -> Vec<u8>,
    ) -> Result<Arc<wgpu::Buffer>> {
        let mut tables = self.shared.tables.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tables.get(name) {
            return Ok(t.clone());
        }
        let buffer = self.capture(|| {
            use wgpu::util::DeviceExt;
            Ok(self
                .shared
                .device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(name),
                    contents: &bytes(),
                    usage: wgpu::BufferUsages::STORAGE,
                }))
        })?;
        let buffer = Arc::new(buffer);
        tables.insert(name, buffer.clone());
        Ok(buffer)
    }

    /// Runs `f` inside validation and out-of-memory error scopes, turning captured wgpu errors
    /// into `Err` instead of the default panic.
    pub(crate) fn capture<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let device = &self.shared.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let validation_error = pollster::block_on(validation.pop());
        let oom_error = pollster::block_on(oom.pop());
        self.alive()?;
        if let Some(e) = oom_error {
            return Err(TensorError::GpuOutOfMemory(e.to_string()));
        }
        if let Some(e) = validation_error {
            return Err(TensorError::Gpu(e.to_string()));
        }
        value
    }

    /// `Err(GpuLost)` once the device is lost.
    fn alive(&self) -> Result<()> {
        let lost = self.shared.lost.lock().unwrap_or_else(|e| e.into_inner());
        match &*lost {
            Some(why) => Err(TensorError::GpuLost(format!(
                "{} stopped working: {why}",
                self.shared.info.name
            ))),
            None => Ok(()),
        }
    }

    fn check_injected_oom(&self, len: usize) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let left = &self.shared.allocs_before_oom;
        let fail = left
            .fetch_update(Relaxed, Relaxed, |n| match n {
                u64::MAX | 0 => None,
                n => Some(n - 1),
            })
            .is_err_and(|n| n == 0);
        if fail {
            return Err(TensorError::GpuOutOfMemory(format!(
                "could not allocate {len} bytes on {} (injected fault)",
                self.shared.info.name
            )));
        }
        Ok(())
    }

    /// Makes the device fail as a real one can (tests only: what a user sees when a GPU runs
    /// out of memory or is lost mid-run); `None` clears an out-of-memory fault. A lost device
    /// stays lost: use a context of its own (`GpuContext::new`) for that.
    pub fn inject_fault(&self, fault: Option<GpuFault>) {
        use std::sync::atomic::Ordering::Relaxed;
        match fault {
            None => self.shared.allocs_before_oom.store(u64::MAX, Relaxed),
            Some(GpuFault::OutOfMemoryAfter(n)) => self.shared.allocs_before_oom.store(n, Relaxed),
            Some(GpuFault::Lost) => {
                let mut lost = self.shared.lost.lock().unwrap_or_else(|e| e.into_inner());
                lost.get_or_insert_with(|| "injected fault".into());
            }
        }
    }
}

impl std::fmt::Debug for GpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GpuContext({}, {:?})",
            self.shared.info.name, self.shared.info.backend
        )
    }
}
