//! Where ops run: the CPU, or a GPU through wgpu.

#[cfg(feature = "gpu")]
use std::sync::Arc;
use std::sync::OnceLock;

use crate::{Result, TensorError};

/// A compute device. `Gpu` holds a shared handle: cloning a `Device` is cheap.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(Arc<crate::gpu::GpuContext>),
}

/// The process-wide GPU context: opening a device is slow, so it is done once. The error is
/// kept as text because `TensorError` is not `Clone`.
#[cfg(feature = "gpu")]
static GPU: OnceLock<std::result::Result<Arc<crate::gpu::GpuContext>, String>> = OnceLock::new();

/// [`Device::set_auto_probe`]'s check.
static AUTO_PROBE: OnceLock<fn() -> std::result::Result<(), String>> = OnceLock::new();

#[cfg(feature = "gpu")]
fn shared_gpu() -> std::result::Result<Arc<crate::gpu::GpuContext>, String> {
    GPU.get_or_init(|| {
        crate::gpu::GpuContext::new()
            .map(Arc::new)
            .map_err(|e| match e {
                TensorError::Gpu(reason) => reason,
                other => other.to_string(),
            })
    })
    .clone()
}

impl Device {
    pub fn cpu() -> Device {
        Device::Cpu
    }

    /// The GPU, or `Err` saying why there is none (no Vulkan adapter, only a software one
    /// without `MTMD_GPU_ALLOW_CPU_ADAPTER=1`, or built without the `gpu` feature).
    pub fn gpu() -> Result<Device> {
        #[cfg(feature = "gpu")]
        {
            shared_gpu().map(Device::Gpu).map_err(TensorError::Gpu)
        }
        #[cfg(not(feature = "gpu"))]
        {
            Err(TensorError::Gpu("built without the `gpu` feature".into()))
        }
    }

    /// Has [`Device::auto`] ask `probe` first whether a usable GPU exists (`Err`: why not), so
    /// that a process which ends up on the CPU never loads a Vulkan driver. A binary installs
    /// one that opens the device in a child process: a software driver (Mesa's lavapipe maps
    /// ~48 MB of LLVM that is never unloaded) or a driver that crashes while enumerating then
    /// stays out of the process. Only the first call takes effect.
    pub fn set_auto_probe(probe: fn() -> std::result::Result<(), String>) {
        let _ = AUTO_PROBE.set(probe);
    }

    /// The GPU when there is one, else the CPU with a one-line notice on stderr (printed once).
    pub fn auto() -> Device {
        #[cfg(feature = "gpu")]
        let opened = GPU.get().is_some();
        #[cfg(not(feature = "gpu"))]
        let opened = false;
        static PROBED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
        let probed = match AUTO_PROBE.get() {
            Some(probe) if !opened => PROBED.get_or_init(probe).clone().map_err(TensorError::Gpu),
            _ => Ok(()),
        };
        match probed.and_then(|()| Device::gpu()) {
            Ok(d) => d,
            Err(e) => {
                static NOTICE: std::sync::Once = std::sync::Once::new();
                NOTICE.call_once(|| {
                    let reason = match e {
                        TensorError::Gpu(reason) => reason,
                        other => other.to_string(),
                    };
                    let reason = reason.replace('\n', " ");
                    eprintln!("mtmd: no usable GPU ({reason}); running on the CPU");
                });
                Device::Cpu
            }
        }
    }

    pub fn is_gpu(&self) -> bool {
        !matches!(self, Device::Cpu)
    }

    /// For display: `cpu` or `gpu (<adapter name>)`.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            #[cfg(feature = "gpu")]
            Device::Gpu(ctx) => format!("gpu ({})", ctx.adapter_name()),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}
