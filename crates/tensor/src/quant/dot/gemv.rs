//! AVX-512 VNNI row dot products of the 32-element formats against prepared activations.
//!
//! For a matmul, the per-block activation tables the GEMM uses (`GemmActs`: the f32 scale and
//! `-offset * sum(x)` of every block) are computed once and shared by every weight row, so a
//! block costs only the weight unpack (to the unsigned stored level), one `dpbusd` and the
//! scaling: the Q8_0 block's f16 scale conversion and the `sum(x)` dot product leave the loop.
//! Integer sums equal the scalar reference's; only the f32 summation order differs.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::pack::GemmActs;
use super::x86::{has_avx512_vnni, load128, load256, nibbles_32};
use super::x86_convert::IQ4_UNSIGNED;
use crate::DType;
use crate::quant::blocks::QK32;

/// The legacy format tags the kernel is instantiated for.
const Q4_0: u8 = 0;
const Q5_0: u8 = 1;
const Q8_0: u8 = 2;
const IQ4_NL: u8 = 3;

/// Dot products of weight row `w` (blocks of `weight`) with activation rows `cols` of `acts`
/// (prepared for the type's offset, see `pack::gemm_acts`), written to `out[i]` for `cols[i]`.
/// Returns false (doing nothing) for other types, mismatched sizes or without AVX-512 VNNI.
pub(super) fn dot_rows(
    weight: DType,
    w: &[u8],
    acts: &GemmActs,
    cols: std::ops::Range<usize>,
    out: &mut [f32],
) -> bool {
    let tag = match weight {
        DType::Q4_0 => Q4_0,
        DType::Q5_0 => Q5_0,
        DType::Q8_0 => Q8_0,
        DType::IQ4NL => IQ4_NL,
        _ => return false,
    };
    let blocks = acts.k / QK32;
    let fits = has_avx512_vnni()
        && w.len() == blocks * weight.type_size()
        && cols.end <= acts.n
        && out.len() >= cols.len()
        && acts.d.len() == acts.n * blocks
        && acts.sums.len() == acts.n * blocks
        && acts.blocks.len() == acts.n * blocks * acts.block_bytes
        && acts.qs_at + QK32 <= acts.block_bytes;
    if !fits {
        return false;
    }
    for (o, c) in out.iter_mut().zip(cols) {
        // SAFETY: features and all lengths checked above.
        *o = unsafe {
            match tag {
                Q4_0 => row::<Q4_0>(w, acts, c),
                Q5_0 => row::<Q5_0>(w, acts, c),
                Q8_0 => row::<Q8_0>(w, acts, c),
                _ => row::<IQ4_NL>(w, acts, c),
            }
        };
    }
    true
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn row<const T: u8>(w: &[u8], a: &GemmActs, c: usize) -> f32 {
    unsafe {
        let size = match T {
            Q4_0 | IQ4_NL => 18,
            Q5_0 => 22,
            _ => 34,
        };
        let blocks = a.k / QK32;
        let x_blocks = a.blocks.as_ptr().add(c * blocks * a.block_bytes + a.qs_at);
        let d = a.d.as_ptr().add(c * blocks);
        let sums = a.sums.as_ptr().add(c * blocks);
        let table = _mm256_broadcastsi128_si256(load128(IQ4_UNSIGNED.as_ptr()));
        let sixteen = _mm256_set1_epi8(16);
        let flip = _mm256_set1_epi8(-128);
        let block = |b: usize, acc: __m256| {
            let x = w.as_ptr().add(b * size);
            let levels = match T {
                Q4_0 => nibbles_32(x.add(2)),
                Q5_0 => {
                    let nib = nibbles_32(x.add(6));
                    let qh = u32::from_le_bytes(std::ptr::read_unaligned(x.add(2).cast()));
                    _mm256_mask_add_epi8(nib, qh, nib, sixteen)
                }
                Q8_0 => _mm256_xor_si256(load256(x.add(2)), flip),
                _ => _mm256_shuffle_epi8(table, nibbles_32(x.add(2))),
            };
            // Lane 0 starts at -offset * sum(x); the lanes are summed at the end anyway.
            let start = _mm256_zextsi128_si256(_mm_cvtsi32_si128(*sums.add(b)));
            let isum = _mm256_dpbusd_epi32(start, levels, load256(x_blocks.add(b * a.block_bytes)));
            let dw = _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(x.cast::<i16>())));
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*d.add(b)));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, acc)
        };
        // Two accumulators so consecutive blocks do not wait on each other's FMA.
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut b = 0;
        while b + 2 <= blocks {
            acc0 = block(b, acc0);
            acc1 = block(b + 1, acc1);
            b += 2;
        }
        if b < blocks {
            acc0 = block(b, acc0);
        }
        let v = _mm256_add_ps(acc0, acc1);
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}
