//! Quantized matrix multiplication with integer dot products, the way ggml runs it on CPUs.
//!
//! Weights stay in their GGUF block format (read in place from the memory map); only the
//! activations are quantized, once per matmul, to the 8-bit format each weight type pairs with
//! (ggml's `vec_dot_type`, see [`activation_type`]): Q8_0 for Q4_0 / Q5_0 / Q8_0 / IQ4_NL /
//! MXFP4, Q8_1 for Q4_1 / Q5_1, Q8_K for the K-quants, IQ and TQ types. A weight block and its
//! activation block are then multiplied in integers and the integer sum is scaled in f32.
//!
//! Layers:
//! - `values`: signed integer levels and sub-block scales per block (for the scalar reference).
//! - `activation`: the scalar activation quantizers (the reference) and their dispatch.
//! - `scalar` (+ `scalar_iq` for the lattice, ternary and FP4 types): the scalar reference
//!   dot products, the numeric contract. Every SIMD kernel must produce the same integer sums
//!   and differ only by f32 summation order.
//! - `x86`: AVX2 and AVX-512 VNNI row dot products; `x86_convert`: SIMD activation quantizers
//!   (bit-identical to the scalar ones) and block unpacking for the packer. `unsafe`, chosen at
//!   run time ([`Isa::detected`]).
//! - `pack` + `gemm`: for several activation rows on AVX-512 VNNI, panels of 16 weight rows
//!   are unpacked into an interleaved u8 layout and a register-tiled micro-kernel computes
//!   16 rows x 8 columns at a time (a GEMM, not n GEMVs).
//! - `gemv`: for one or two activation rows of the 32-element formats on AVX-512 VNNI, row
//!   dot products on the same prepared activation tables (one `dpbusd` per block);
//!   `gemv_k` the same for Q4_K and Q6_K (8 rows per pass, sub-block scales by `vpdpwssd`).
//! - `matmul`: validation, threading (rayon over weight rows) and the GEMV / GEMM choice.
//!
//! Threading note: each matmul hands its row ranges to the rayon pool. Calling it from a
//! thread outside the pool costs a wake-up per call (~10 us); small matrices (under 128 KiB of
//! weights) therefore stay on the calling thread, and callers doing many small matmuls (token
//! generation) should run their loop inside the pool (`rayon::scope` / `ThreadPool::install`).

mod activation;
#[cfg(target_arch = "x86_64")]
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemv;
#[cfg(target_arch = "x86_64")]
mod gemv_k;
mod matmul;
#[cfg(target_arch = "x86_64")]
mod pack;
mod scalar;
mod scalar_iq;
mod values;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_convert;

use crate::{DType, Result, TensorError};

pub use activation::{QuantizedActivations, quantize_activations, quantize_activations_with};
pub use matmul::{matmul_quant, matmul_quant_acts, matmul_quant_acts_with, matmul_quant_with};

/// The kernel level (`crate::isa`): [`Isa::detected`] is what the machine runs; tests force
/// lower levels to compare them against [`Isa::Scalar`], the reference. `Avx512Vnni` runs the
/// `dpbusd` kernels and the packed GEMM; `Avx2` and plain `Avx512` the AVX2 kernels.
pub use crate::isa::Isa;

/// The levels with distinct kernels here (plain `Avx512` runs the AVX2 ones).
pub const LEVELS: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512Vnni];

fn check_available(isa: Isa) -> Result<()> {
    if isa.is_available() {
        Ok(())
    } else {
        Err(TensorError::InvalidView(format!(
            "{isa:?} kernels are not supported by this CPU"
        )))
    }
}

/// The activation format ggml pairs with weight type `weight` (`None`: no integer dot product).
pub fn activation_type(weight: DType) -> Option<DType> {
    match weight {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4NL | DType::MXFP4 => Some(DType::Q8_0),
        DType::Q4_1 | DType::Q5_1 => Some(DType::Q8_1),
        DType::Q2K
        | DType::Q3K
        | DType::Q4K
        | DType::Q5K
        | DType::Q6K
        | DType::IQ4XS
        | DType::IQ2XXS
        | DType::IQ2XS
        | DType::IQ2S
        | DType::IQ3XXS
        | DType::IQ3S
        | DType::IQ1S
        | DType::IQ1M
        | DType::TQ1_0
        | DType::TQ2_0 => Some(DType::Q8K),
        _ => None,
    }
}

/// Weight types [`matmul_quant`] and [`vec_dot`] accept.
pub const SUPPORTED_TYPES: &[DType] = &[
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::IQ4NL,
    DType::IQ4XS,
    DType::IQ2XXS,
    DType::IQ2XS,
    DType::IQ2S,
    DType::IQ3XXS,
    DType::IQ3S,
    DType::IQ1S,
    DType::IQ1M,
    DType::TQ1_0,
    DType::TQ2_0,
    DType::MXFP4,
];

fn unsupported(op: &'static str, dtype: DType) -> TensorError {
    TensorError::Unsupported {
        op,
        dtype,
        backend: "cpu",
    }
}

/// Dot product of one weight row (`w`, whole blocks of `weight`) with one quantized activation
/// row (`act`, blocks of [`activation_type`]`(weight)` covering the same number of elements),
/// with the detected kernels.
pub fn vec_dot(weight: DType, w: &[u8], act: &[u8]) -> Result<f32> {
    vec_dot_with(Isa::detected(), weight, w, act)
}

/// [`vec_dot`] with a chosen kernel level (must be in [`Isa::available`]).
pub fn vec_dot_with(isa: Isa, weight: DType, w: &[u8], act: &[u8]) -> Result<f32> {
    check_available(isa)?;
    let act_type = activation_type(weight).ok_or_else(|| unsupported("vec_dot", weight))?;
    let n_blocks = w.len() / weight.type_size();
    let n_elems = n_blocks * weight.block_size();
    let act_blocks = n_elems / act_type.block_size();
    if !w.len().is_multiple_of(weight.type_size())
        || !n_elems.is_multiple_of(act_type.block_size())
        || act.len() != act_blocks * act_type.type_size()
    {
        return Err(TensorError::ShapeMismatch {
            op: "vec_dot",
            detail: format!(
                "{} bytes of {weight} ({n_elems} elements) against {} bytes of {act_type} (need {})",
                w.len(),
                act.len(),
                act_blocks * act_type.type_size()
            ),
        });
    }
    Ok(kernel_for(isa, weight)?(w, act))
}

/// A row dot product over raw bytes whose lengths the caller has already checked.
pub(crate) type DotFn = fn(&[u8], &[u8]) -> f32;

/// The dot-product kernel of `weight` at level `isa` (falling back to lower levels for the types
/// a level has no kernel for).
pub(crate) fn kernel_for(isa: Isa, weight: DType) -> Result<DotFn> {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Scalar
        && let Some(f) = x86::dot_kernel(isa, weight)
    {
        return Ok(f);
    }
    let _ = isa;
    scalar::dot_kernel(weight).ok_or_else(|| unsupported("vec_dot", weight))
}
