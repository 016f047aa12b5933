//! CPU kernels: f32 activations, row-major slices, rayon inside.
//!
//! Every kernel picks AVX-512, AVX2+FMA or the scalar reference of its op (`ops/`) from
//! [`features`], detected once; [`with_isa`] caps the choice on one thread (tests compare
//! every path). Work splits across rayon's global pool only when it is large enough to pay.

// "cpu-core" kernels.
pub mod act;
pub mod elementwise;
mod gemm;
pub mod get_rows;
mod math;
pub mod matmul_float;
pub mod norm;
pub mod probe;
pub mod simd;
pub use act::{
    geglu, geglu_f16_table, gelu_erf, gelu_f16_table, gelu_quick, gelu_tanh, silu, swiglu,
};
pub use elementwise::{add, add_rows, mul, mul_rows, scale};
pub use get_rows::get_rows;
pub use matmul_float::{matmul, matmul_wide};
pub use norm::{layer_norm, rms_norm, softmax_rows};
pub use simd::{CpuFeatures, Isa, features, isa, with_isa};

// "cpu-nn" kernels.
pub mod rope;
pub use rope::{rope, rope_2d};
// The op contracts live in `ops/`; re-exported here for callers that only use kernels.
pub use crate::ops::attention::{AttnMask, AttnParams, KvData};
pub use crate::ops::rope::{RopeConfig, RopeMode};
pub mod attention;
pub use attention::attention;
pub mod concat;
pub mod conv;
pub mod interp;
pub mod pool;
pub mod transpose;
pub use concat::concat;
pub use conv::{Conv1dParams, Conv2dParams, conv1d, conv2d};
pub use interp::{InterpMode, interpolate_bicubic, interpolate_bilinear};
pub use pool::{PoolKind, avg_pool2d};
pub use transpose::transpose;

/// Runs `work` on a thread of rayon's global pool (directly if the caller is one) and waits.
///
/// A model step is hundreds of short parallel ops. Issued from outside the pool, each op
/// wakes the workers and puts the caller to sleep until they finish (futex round trips of
/// several µs per op); issued from a worker, the other workers are still spinning for work
/// when the next op arrives. Decode at 2 threads gains ~10% from this.
pub fn on_compute_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| work())
}
