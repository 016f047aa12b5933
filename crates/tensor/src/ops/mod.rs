//! Ops: one module per op with its contract and scalar reference.
//!
//! Each module has the Tensor-level op (`ops::norm::rms_norm(&x, w, eps)`, f32 result) and
//! its scalar reference: `reference` (a function, or a module of them when the file holds
//! several ops) — plain loops that every backend is tested against.

/// The backend choice of every op: when an input lives on the GPU and the GPU backend
/// supports the op for its dtypes, the GPU kernel runs and its result stays there;
/// anything the GPU does not support falls through to the CPU path (which downloads).
macro_rules! try_gpu {
    ($on_gpu:expr, $call:expr) => {
        #[cfg(feature = "gpu")]
        if $on_gpu.gpu_buffer().is_some() {
            match $call {
                Err($crate::TensorError::Unsupported { .. }) => {}
                result => return result,
            }
        }
    };
}
pub(crate) use try_gpu;

// "cpu-core" ops.
pub mod act;
pub mod elementwise;
pub mod get_rows;
pub mod matmul;
pub mod norm;
pub mod softmax;

// "cpu-nn" ops.
pub mod attention;
pub mod concat;
pub mod conv;
pub mod interp;
pub mod permute;
pub mod pool;
pub mod rope;
