//! CPU kernels: f32 activations, row-major slices, rayon inside.
//!
//! Every kernel picks AVX-512, AVX2+FMA or the scalar reference of its op (`ops/`) from
//! [`features`], detected once; [`with_isa`] caps the choice on one thread (tests compare
//! every path). Work splits across rayon's global pool only when it is large enough to pay.

// "cpu-core" kernels.
pub mod act;
pub mod elementwise;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_bf16;
/// No AVX512-BF16 off x86: the bf16 paths are never taken.
#[cfg(not(target_arch = "x86_64"))]
mod gemm_bf16 {
    pub(super) fn available() -> bool {
        false
    }
    pub(super) fn gemm_bf16<T>(_: &[T], _: &[f32], _: usize, _: usize, _: usize, _: &mut [f32]) {
        unreachable!("bf16 GEMM without AVX512-BF16")
    }
    pub(super) fn to_bf16_pairs(_: &[f32], _: &mut [u32]) {
        unreachable!("bf16 pairs without AVX512-BF16")
    }
}
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
pub use matmul_float::{
    Act, EncoderPrecision, Epilogue, bf16_available, encoder_precision, linear_wide, matmul,
    matmul_wide, set_encoder_precision,
};
pub use norm::{layer_norm, rms_norm, softmax_rows};
pub use simd::{CpuFeatures, Isa, features, isa, with_isa};

// "cpu-nn" kernels.
pub mod rope;
pub use rope::{rope, rope_2d};
// The op contracts live in `ops/`; re-exported here for callers that only use kernels.
pub use crate::ops::attention::{AttnMask, AttnParams, KvData};
pub use crate::ops::rope::{RopeConfig, RopeMode};
pub mod attention;
pub use attention::{PvPrecision, attention, attention_with};
pub mod concat;
pub mod conv;
pub mod grid;
pub mod interp;
pub mod pool;
pub mod transpose;
pub use concat::concat;
pub use conv::{Conv1dParams, Conv2dParams, conv1d, conv2d};
pub use interp::{InterpMode, interpolate_bicubic, interpolate_bilinear};
pub use pool::{PoolKind, avg_pool2d};
pub use transpose::transpose;

/// Runs `work` on a thread of rayon's global pool (directly if the caller is one) and waits,
/// with the pool's other threads kept awake for the duration.
///
/// A model step is hundreds of short parallel ops separated by short serial ones. Left
/// alone, rayon's idle workers fall asleep within microseconds, and every op then starts with
/// a futex wake-up that costs about as much as the op itself (a decode step of Gemma 3 270M
/// made ~125 of them per token, and 2 threads were no faster than 1 on the layer matrices).
/// Here every other worker runs a job that executes whatever the step queues and otherwise
/// spins (yielding the core now and then), until the step ends, like llama.cpp's spinning
/// thread pool.
pub fn on_compute_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let helpers = rayon::current_num_threads().saturating_sub(1);
    let done = std::sync::atomic::AtomicBool::new(false);
    rayon::scope(|s| {
        let leader = rayon::current_thread_index();
        for _ in 0..helpers {
            let done = &done;
            s.spawn(move |_| stay_awake(done, leader));
        }
        // Set even if `work` panics, so the helpers return and the scope can end.
        struct Finish<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        let _finish = Finish(&done);
        work()
    })
}

/// A helper of [`on_compute_pool`]: runs the pool's pending jobs until `done`, spinning
/// between them. Leaves at once on the leader's own thread (it picked its own helper job
/// while waiting for a join) and after [`STAY_AWAKE_IDLE`] without work (the step is in a
/// long serial stretch, or another step holds the thread), so nothing can wait on it forever.
fn stay_awake(done: &std::sync::atomic::AtomicBool, leader: Option<usize>) {
    use std::sync::atomic::Ordering;
    if rayon::current_thread_index() == leader {
        return;
    }
    let mut idle_since: Option<std::time::Instant> = None;
    let mut idle_rounds = 0u32;
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {
                idle_since = None;
                idle_rounds = 0;
            }
            Some(rayon::Yield::Idle) => {
                idle_rounds += 1;
                if idle_rounds.is_multiple_of(64) {
                    let since = *idle_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > STAY_AWAKE_IDLE {
                        return;
                    }
                    // Lets anything else that wants this core run.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
            None => return,
        }
    }
}

/// How long an [`on_compute_pool`] helper spins without work before it goes back to
/// rayon's own (sleeping) idle loop.
const STAY_AWAKE_IDLE: std::time::Duration = std::time::Duration::from_millis(2);
