//! AVX2 activation quantizers (bit-identical to the scalar reference in `activation`) and the
//! SIMD unpacking of 32-element blocks for the GEMM packer.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::x86::{Avx2, Ops, fp16_pair, has_avx2, hsum_epi32, load128, load256, nibbles_32};
use crate::DType;
use crate::quant::blocks::{BlockQ8_0, BlockQ8K, KVALUES_IQ4NL, QK_K, QK32};

/// Q8_0 quantization of whole blocks of `x` into `out`.
pub(super) fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    assert!(
        has_avx2(),
        "quantize_q8_0: AVX2 entry point used without AVX2"
    );
    // SAFETY: AVX2/FMA/F16C checked above; reads stay within whole blocks of `x`.
    unsafe { quantize_q8_0_avx2(x, out) }
}

/// Q8_K quantization of whole blocks of `x` into `out`.
pub(super) fn quantize_q8k(x: &[f32], out: &mut [BlockQ8K]) {
    assert!(
        has_avx2(),
        "quantize_q8k: AVX2 entry point used without AVX2"
    );
    // SAFETY: as above.
    unsafe { quantize_q8k_avx2(x, out) }
}

/// NaN lanes to 0, as the scalar reference's saturating `as` casts do (non-finite inputs).
#[inline(always)]
unsafe fn zero_nan(v: __m256) -> __m256 {
    unsafe { _mm256_and_ps(v, _mm256_cmp_ps::<_CMP_ORD_Q>(v, v)) }
}

#[inline(always)]
unsafe fn abs_ps(v: __m256) -> __m256 {
    unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), v) }
}

#[inline(always)]
unsafe fn hmax_ps(v: __m256) -> f32 {
    unsafe {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
    }
}

/// Packs 4 vectors of 8 i32 (within i8 range) into 32 i8 in element order.
#[inline(always)]
unsafe fn pack_i32_to_i8(v: [__m256i; 4]) -> __m256i {
    unsafe {
        let a = _mm256_packs_epi32(v[0], v[1]);
        let b = _mm256_packs_epi32(v[2], v[3]);
        // packs interleave 128-bit lanes: restore element order.
        let p = _mm256_packs_epi16(a, b);
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8_0_avx2(x: &[f32], out: &mut [BlockQ8_0]) {
    unsafe {
        for (x, b) in x.chunks_exact(QK32).zip(out) {
            let p = x.as_ptr();
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(p.add(8 * i)));
            let m = _mm256_max_ps(
                _mm256_max_ps(abs_ps(v[0]), abs_ps(v[1])),
                _mm256_max_ps(abs_ps(v[2]), abs_ps(v[3])),
            );
            let amax = hmax_ps(m);
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b.d = half::f16::from_f32(d);
            let idv = _mm256_set1_ps(id);
            let q = v.map(|v| {
                // Round half away from zero: floor(|v|), plus one if the fraction is >= 0.5.
                let s = _mm256_mul_ps(v, idv);
                let a = abs_ps(s);
                let t = _mm256_floor_ps(a);
                let up = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_sub_ps(a, t), _mm256_set1_ps(0.5));
                let r = _mm256_add_ps(t, _mm256_and_ps(up, _mm256_set1_ps(1.0)));
                let signed = _mm256_or_ps(r, _mm256_and_ps(s, _mm256_set1_ps(-0.0)));
                _mm256_cvttps_epi32(zero_nan(signed))
            });
            _mm256_storeu_si256(b.qs.as_mut_ptr().cast(), pack_i32_to_i8(q));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_q8k_avx2(x: &[f32], out: &mut [BlockQ8K]) {
    unsafe {
        for (x, b) in x.chunks_exact(QK_K).zip(out) {
            let p = x.as_ptr();
            let mut m = _mm256_setzero_ps();
            for i in 0..32 {
                m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(p.add(8 * i))));
            }
            let amax = hmax_ps(m);
            if amax == 0.0 {
                b.d = 0.0;
                b.qs = [0; QK_K];
                b.bsums = [0; 16];
                continue;
            }
            // The first element whose magnitude is amax sets the sign (as the scalar scan).
            let amax_v = _mm256_set1_ps(amax);
            let mut max = amax;
            for i in 0..32 {
                let hit =
                    _mm256_cmp_ps::<_CMP_EQ_OQ>(abs_ps(_mm256_loadu_ps(p.add(8 * i))), amax_v);
                let mask = _mm256_movemask_ps(hit);
                if mask != 0 {
                    max = x[8 * i + mask.trailing_zeros() as usize];
                    break;
                }
            }
            let iscale = -127.0 / max;
            let is = _mm256_set1_ps(iscale);
            let cap = _mm256_set1_epi32(127);
            for g in 0..8 {
                let q: [__m256i; 4] = std::array::from_fn(|i| {
                    let s = _mm256_mul_ps(_mm256_loadu_ps(p.add(32 * g + 8 * i)), is);
                    let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(s);
                    _mm256_min_epi32(_mm256_cvttps_epi32(zero_nan(r)), cap)
                });
                b.bsums[2 * g] = hsum_epi32(_mm256_add_epi32(q[0], q[1])) as i16;
                b.bsums[2 * g + 1] = hsum_epi32(_mm256_add_epi32(q[2], q[3])) as i16;
                _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * g).cast(), pack_i32_to_i8(q));
            }
            b.d = 1.0 / iscale;
        }
    }
}

/// IQ4 table entries plus 128 (the unsigned levels the GEMM panels store).
pub(super) const IQ4_UNSIGNED: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES_IQ4NL[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

/// Unsigned levels (stored level + the type's offset: Q8_0 and IQ4_NL `value + 128`, Q4_0
/// and Q5_0 the raw 4 / 5 bits) and f32 scales of every block of a row of a 32-element
/// format, for the GEMM packer. Returns false for other types, short outputs or without AVX2.
pub(super) fn unpack_legacy_row(
    weight: DType,
    row: &[u8],
    levels: &mut [u8],
    d: &mut [f32],
) -> bool {
    let size = weight.type_size();
    let nb = row.len() / size;
    let known = matches!(
        weight,
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4NL
    );
    if !known || !has_avx2() || levels.len() < nb * QK32 || d.len() < nb {
        return false;
    }
    // SAFETY: AVX2/F16C checked; reads stay within `nb` whole blocks, writes within the
    // checked output lengths.
    unsafe { unpack_legacy_avx2(weight, row, nb, levels, d) };
    true
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack_legacy_avx2(
    weight: DType,
    row: &[u8],
    nb: usize,
    levels: &mut [u8],
    d: &mut [f32],
) {
    unsafe {
        let size = weight.type_size();
        let table = _mm256_broadcastsi128_si256(load128(IQ4_UNSIGNED.as_ptr()));
        let sixteen = _mm256_set1_epi8(16);
        let flip = _mm256_set1_epi8(-128);
        for i in 0..nb {
            let x = row.as_ptr().add(i * size);
            let v = match weight {
                DType::Q4_0 => nibbles_32(x.add(2)),
                DType::Q5_0 => {
                    let qh = u32::from_le_bytes(std::ptr::read_unaligned(x.add(2).cast()));
                    _mm256_or_si256(
                        nibbles_32(x.add(6)),
                        _mm256_and_si256(Avx2::bits_to_bytes(qh), sixteen),
                    )
                }
                DType::Q8_0 => _mm256_xor_si256(load256(x.add(2)), flip),
                _ => _mm256_shuffle_epi8(table, nibbles_32(x.add(2))),
            };
            _mm256_storeu_si256(levels.as_mut_ptr().add(i * QK32).cast(), v);
            d[i] = fp16_pair(x).0;
        }
    }
}

/// Asks for the `len` bytes at `start` to be brought into L2. Safe for any address: the
/// pointer is only offset with wrapping arithmetic and never dereferenced (a prefetch does
/// not fault).
pub(super) fn prefetch_l2(start: *const u8, len: usize) {
    let mut at = 0;
    while at < len {
        // SAFETY: SSE is part of x86-64; a prefetch of any address is harmless.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(at).cast()) };
        at += 64;
    }
}
