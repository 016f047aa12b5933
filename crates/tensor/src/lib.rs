//! The tensor runtime of mtmd-rs.
//!
//! - [`Tensor`]: shape, strides and dtype over host, memory-mapped or GPU storage.
//! - [`quant`]: every GGUF block format (dequantization and activation quantization).
//! - [`ops`]: one module per op: its contract and its scalar reference implementation.
//! - [`isa`]: the one instruction-set level ([`isa::Isa`]) every CPU kernel dispatches on,
//!   detected once.
//! - [`cpu`]: the fast CPU kernels (SIMD picked once at start-up, rayon for threads).
//! - [`gpu`]: the wgpu backend and its WGSL kernels (`shaders/` in this crate).

pub mod alloc;
pub mod cpu;
pub mod exec;
#[cfg(feature = "gpu")]
pub mod gpu;
pub mod isa;
pub mod ops;
pub mod quant;
pub mod safetensors;

mod device;
mod error;
mod storage;
mod tensor;

pub use device::Device;
pub use error::TensorError;
pub use gguf::GgmlType as DType;
pub use storage::{HostBytes, Storage};
pub use tensor::Tensor;

pub type Result<T, E = TensorError> = std::result::Result<T, E>;
