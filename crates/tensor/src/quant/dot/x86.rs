//! AVX2 and AVX-512 VNNI row dot products (the quantizers are in `x86_convert`).
//!
//! Each kernel body is written once, generic over [`Ops`] (the few instructions that differ:
//! `maddubs + madd` on AVX2, `dpbusd` / `dpwssd` / `movm` with VNNI), and instantiated in two
//! `#[target_feature]` entry points. Every kernel forms the same integer sums per block (or
//! super-block) as the scalar reference and scales them in f32; they read only whole blocks
//! inside the slices they are given, so a short slice can never be read past its end.
//!
//! The K-quant kernels (Q4_K, Q5_K, Q6_K, IQ4_XS) scale in the packed GEMM's f32 order, so a
//! matmul row gives the same bits whichever path its batch size picks (see `matmul`): per
//! super-block, in order, `f = fma(isum, d_w * d_x, f)` (with mins, then
//! `f = fma(-msum, dmin_w * d_x, f)`), on scalars from exact integer sums.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{DotFn, Isa};
use crate::DType;
use crate::quant::blocks::KVALUES_IQ4NL;

pub(super) fn has_avx2() -> bool {
    Isa::Avx2.is_available()
}

pub(super) fn has_avx512_vnni() -> bool {
    Isa::Avx512Vnni.is_available()
}

/// The SIMD kernel of `weight` at level `isa`, if there is one and the CPU supports it.
pub(super) fn dot_kernel(isa: Isa, weight: DType) -> Option<DotFn> {
    match isa {
        Isa::Avx512Vnni if has_avx512_vnni() => vnni::kernel(weight),
        Isa::Avx2 | Isa::Avx512 if has_avx2() => avx2::kernel(weight),
        _ => None,
    }
}

/// Generates the `#[target_feature]` entry points of every kernel for one instruction set.
macro_rules! entry_points {
    ($features:literal, $ops:ty) => {
        use super::*;

        pub(super) fn kernel(weight: DType) -> Option<DotFn> {
            Some(match weight {
                DType::Q4_0 => q4_0,
                DType::Q5_0 => q5_0,
                DType::Q8_0 => q8_0,
                DType::IQ4NL => iq4nl,
                DType::Q4K => q4k,
                DType::Q5K => q5k,
                DType::Q6K => q6k,
                DType::IQ4XS => iq4xs,
                _ => return None,
            })
        }

        entry_points!(@each $features, $ops, q4_0, q5_0, q8_0, iq4nl, q4k, q5k, q6k, iq4xs);
    };
    (@each $features:literal, $ops:ty, $($name:ident),*) => {
        $(
            fn $name(w: &[u8], a: &[u8]) -> f32 {
                #[target_feature(enable = $features)]
                unsafe fn inner(w: &[u8], a: &[u8]) -> f32 {
                    // SAFETY: the kernels bound every read by the slice lengths.
                    unsafe { bodies::$name::<$ops>(w, a) }
                }
                // SAFETY: `kernel` is only reached after `dot_kernel` checked the CPU features.
                unsafe { inner(w, a) }
            }
        )*
    };
}

mod avx2 {
    entry_points!("avx2,fma,f16c", Avx2);
}

mod vnni {
    entry_points!("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", Vnni);
}

/// The instructions that differ between AVX2 and AVX-512 VNNI.
pub(super) trait Ops {
    /// `acc + sum over groups of 4 of a (u8) * b (i8)`, per i32 lane. AVX2 saturates pairs in
    /// i16, so callers keep `|a0*b0 + a1*b1| <= 32767`.
    unsafe fn dot_u8i8(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
    /// `acc + a0*b0 + a1*b1` over i16 pairs, per i32 lane.
    unsafe fn madd_i16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
    /// Byte j = 0xFF where bit j of `bits` is set, else 0.
    unsafe fn bits_to_bytes(bits: u32) -> __m256i;
}

pub(super) struct Avx2;
struct Vnni;

impl Ops for Avx2 {
    #[inline(always)]
    unsafe fn dot_u8i8(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        unsafe {
            _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)),
            )
        }
    }
    #[inline(always)]
    unsafe fn madd_i16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)) }
    }
    #[inline(always)]
    unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        unsafe {
            // Byte j gets byte j/8 of `bits`, then tests its bit j%8.
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(bits as i32),
                _mm256_setr_epi64x(
                    0,
                    0x0101_0101_0101_0101,
                    0x0202_0202_0202_0202,
                    0x0303_0303_0303_0303,
                ),
            );
            let select = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select)
        }
    }
}

impl Ops for Vnni {
    #[inline(always)]
    unsafe fn dot_u8i8(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_dpbusd_epi32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn madd_i16(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        unsafe { _mm256_dpwssd_epi32(acc, a, b) }
    }
    #[inline(always)]
    unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        unsafe { _mm256_movm_epi8(bits) }
    }
}

// ---- small helpers (inlined into the target_feature entry points) ----

#[inline(always)]
unsafe fn fp16(p: *const u8) -> f32 {
    unsafe {
        let bits = u16::from_le_bytes([*p, *p.add(1)]);
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
    }
}

/// The two adjacent f16 values at `p` (d and dmin of a K-quant block) as f32; reads 4 bytes.
#[inline(always)]
pub(super) unsafe fn fp16_pair(p: *const u8) -> (f32, f32) {
    unsafe {
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p.cast::<i32>())));
        (_mm_cvtss_f32(v), _mm_cvtss_f32(_mm_movehdup_ps(v)))
    }
}

/// Sums `$step(i, acc)` over blocks `0..$nb` alternating two accumulators, so consecutive
/// blocks do not wait on each other's FMA; evaluates to the horizontal sum. (A macro, not a
/// closure: closures in these non-`target_feature` bodies are not inlined.)
macro_rules! two_chains {
    ($nb:expr, |$i:ident, $acc:ident| $step:expr) => {{
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut next = 0;
        while next + 2 <= $nb {
            a0 = {
                let ($i, $acc) = (next, a0);
                $step
            };
            a1 = {
                let ($i, $acc) = (next + 1, a1);
                $step
            };
            next += 2;
        }
        if next < $nb {
            a0 = {
                let ($i, $acc) = (next, a0);
                $step
            };
        }
        hsum_ps(_mm256_add_ps(a0, a1))
    }};
}

/// `a * b + c` with one rounding (the GEMM lanes' `vfmadd`).
#[inline(always)]
unsafe fn fma_s(a: f32, b: f32, c: f32) -> f32 {
    unsafe { _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c))) }
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    unsafe { f32::from_le_bytes([*p, *p.add(1), *p.add(2), *p.add(3)]) }
}

#[inline(always)]
pub(super) unsafe fn load128(p: *const u8) -> __m128i {
    unsafe { _mm_loadu_si128(p.cast()) }
}

#[inline(always)]
pub(super) unsafe fn load256(p: *const u8) -> __m256i {
    unsafe { _mm256_loadu_si256(p.cast()) }
}

/// 16 bytes of nibbles to 32 levels: low nibbles first, then high nibbles (Q4_0 order).
#[inline(always)]
pub(super) unsafe fn nibbles_32(p: *const u8) -> __m256i {
    unsafe {
        let q = load128(p);
        _mm256_and_si256(
            _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
            _mm256_set1_epi8(0x0F),
        )
    }
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

#[inline(always)]
pub(super) unsafe fn hsum_epi32(v: __m256i) -> i32 {
    unsafe {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)))
    }
}

/// Signed levels times activations: |v| as u8 against y with v's sign (exact for every i8
/// level, including -128, since activations stay within -127..=127).
#[inline(always)]
unsafe fn dot_signed<O: Ops>(acc: __m256i, v: __m256i, y: __m256i) -> __m256i {
    unsafe { O::dot_u8i8(acc, _mm256_sign_epi8(v, v), _mm256_sign_epi8(y, v)) }
}

/// Sub-block scales and mins (6 bits each) of Q4_K / Q5_K from their 12 packed bytes, as two
/// u64 of 8 bytes each (scale j / min j in byte j).
///
/// Bytes 0..4 hold the low 6 bits of scales 0..4 and their top 2 bits the high bits of
/// scales 4..8; bytes 4..8 the same for the mins; bytes 8..12 the low nibbles of scales 4..8
/// and, in their high nibbles, of mins 4..8. Done on 32-bit words, one byte per lane.
#[inline(always)]
pub(super) unsafe fn k4_scales_mins(p: *const u8) -> (u64, u64) {
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const LOW2: u32 = 0x0303_0303;
    let [w0, w1, w2]: [u32; 3] = unsafe { std::ptr::read_unaligned(p.cast()) };
    let sc_high = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let m_high = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    (
        u64::from(w0 & LOW6) | (u64::from(sc_high) << 32),
        u64::from(w1 & LOW6) | (u64::from(m_high) << 32),
    )
}

/// i16 vector with every lane = byte `j` of `bytes` (unsigned).
#[inline(always)]
unsafe fn splat_u8_as_i16(bytes: __m128i, j: usize) -> __m256i {
    unsafe { _mm256_cvtepu8_epi16(_mm_shuffle_epi8(bytes, _mm_set1_epi8(j as i8))) }
}

/// Sum over the 8 sub-blocks of 32 of `mins[j] * (bsums[2j] + bsums[2j+1])`, mins as bytes.
#[inline(always)]
unsafe fn mins_dot_bsums(mins: u64, bsums: *const u8) -> i32 {
    unsafe {
        let b = load256(bsums);
        // Each min covers two sums of 16: widen mins to i16 and duplicate them pairwise.
        let m = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64));
        let m = _mm256_set_m128i(_mm_unpackhi_epi16(m, m), _mm_unpacklo_epi16(m, m));
        hsum_epi32(_mm256_madd_epi16(b, m))
    }
}

/// The f16 at `p` widened to f32 in all 8 lanes (no scalar round trip).
#[inline(always)]
unsafe fn fp16_splat(p: *const u8) -> __m256 {
    unsafe { _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(p.cast::<i16>()))) }
}

/// Block sizes in bytes.
const Q4_0_BYTES: usize = 18;
const Q5_0_BYTES: usize = 22;
const Q8_0_BYTES: usize = 34;
const Q4K_BYTES: usize = 144;
const Q5K_BYTES: usize = 176;
const Q6K_BYTES: usize = 210;
const IQ4XS_BYTES: usize = 136;
const Q8K_BYTES: usize = 292;
/// Offsets inside a Q8_K block.
const Q8K_QS: usize = 4;
const Q8K_BSUMS: usize = 260;

mod bodies {
    use super::*;

    #[inline(always)]
    pub(super) unsafe fn q4_0<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        let nb = (w.len() / Q4_0_BYTES).min(a.len() / Q8_0_BYTES);
        unsafe {
            let eight = _mm256_set1_epi8(8);
            two_chains!(nb, |i, acc| {
                let x = w.as_ptr().add(i * Q4_0_BYTES);
                let y = a.as_ptr().add(i * Q8_0_BYTES);
                let yq = load256(y.add(2));
                // sum (q - 8) * y = sum q * y - sum 8 * y, both with unsigned left operands.
                let s = _mm256_sub_epi32(
                    O::dot_u8i8(_mm256_setzero_si256(), nibbles_32(x.add(2)), yq),
                    O::dot_u8i8(_mm256_setzero_si256(), eight, yq),
                );
                _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(s),
                    _mm256_mul_ps(fp16_splat(x), fp16_splat(y)),
                    acc,
                )
            })
        }
    }

    #[inline(always)]
    pub(super) unsafe fn q5_0<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        let nb = (w.len() / Q5_0_BYTES).min(a.len() / Q8_0_BYTES);
        unsafe {
            let sixteen = _mm256_set1_epi8(16);
            two_chains!(nb, |i, acc| {
                let x = w.as_ptr().add(i * Q5_0_BYTES);
                let y = a.as_ptr().add(i * Q8_0_BYTES);
                let qh = u32::from_le_bytes(std::ptr::read_unaligned(x.add(2).cast()));
                let high = _mm256_and_si256(O::bits_to_bytes(qh), sixteen);
                let q = _mm256_or_si256(nibbles_32(x.add(6)), high);
                let yq = load256(y.add(2));
                let s = _mm256_sub_epi32(
                    O::dot_u8i8(_mm256_setzero_si256(), q, yq),
                    O::dot_u8i8(_mm256_setzero_si256(), sixteen, yq),
                );
                _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(s),
                    _mm256_mul_ps(fp16_splat(x), fp16_splat(y)),
                    acc,
                )
            })
        }
    }

    #[inline(always)]
    pub(super) unsafe fn q8_0<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        let nb = (w.len() / Q8_0_BYTES).min(a.len() / Q8_0_BYTES);
        unsafe {
            two_chains!(nb, |i, acc| {
                let x = w.as_ptr().add(i * Q8_0_BYTES);
                let y = a.as_ptr().add(i * Q8_0_BYTES);
                let s =
                    dot_signed::<O>(_mm256_setzero_si256(), load256(x.add(2)), load256(y.add(2)));
                _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(s),
                    _mm256_mul_ps(fp16_splat(x), fp16_splat(y)),
                    acc,
                )
            })
        }
    }

    #[inline(always)]
    pub(super) unsafe fn iq4nl<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        let nb = (w.len() / Q4_0_BYTES).min(a.len() / Q8_0_BYTES);
        unsafe {
            let table = _mm256_broadcastsi128_si256(load128(KVALUES_IQ4NL.as_ptr().cast()));
            two_chains!(nb, |i, acc| {
                let x = w.as_ptr().add(i * Q4_0_BYTES);
                let y = a.as_ptr().add(i * Q8_0_BYTES);
                let v = _mm256_shuffle_epi8(table, nibbles_32(x.add(2)));
                let s = dot_signed::<O>(_mm256_setzero_si256(), v, load256(y.add(2)));
                _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(s),
                    _mm256_mul_ps(fp16_splat(y), fp16_splat(x)),
                    acc,
                )
            })
        }
    }

    /// Q4_K (`FIFTH = false`) and Q5_K (`FIFTH = true`, a fifth bit per level in `qh`).
    #[inline(always)]
    unsafe fn k_with_mins<O: Ops, const FIFTH: bool>(w: &[u8], a: &[u8]) -> f32 {
        let block_bytes = if FIFTH { Q5K_BYTES } else { Q4K_BYTES };
        let qs_at = if FIFTH { 48 } else { 16 };
        let nb = (w.len() / block_bytes).min(a.len() / Q8K_BYTES);
        unsafe {
            let low = _mm256_set1_epi8(0x0F);
            let bit4 = _mm256_set1_epi8(0x10);
            let mut acc = 0f32;
            for i in 0..nb {
                let x = w.as_ptr().add(i * block_bytes);
                let y = a.as_ptr().add(i * Q8K_BYTES);
                let yd = f32_at(y);
                let (sc, mins) = k4_scales_mins(x.add(4));
                let sc = _mm_cvtsi64_si128(sc as i64);
                // Two integer chains (exact, so the split changes nothing): one chain of
                // eight dependent multiply-adds was the row kernel's critical path.
                let (mut isum, mut isum_hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for j in 0..4 {
                    // 64-value chunk j: low nibbles are sub-block 2j, high nibbles 2j+1.
                    let q = load256(x.add(qs_at + 32 * j));
                    let mut lo = _mm256_and_si256(q, low);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
                    if FIFTH {
                        // Bits 2j and 2j+1 of each qh byte are bit 4 of the low / high levels.
                        let h =
                            _mm256_srl_epi16(load256(x.add(16)), _mm_cvtsi32_si128(2 * j as i32));
                        lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(h, 4), bit4));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(h, 3), bit4));
                    }
                    let p0 = _mm256_maddubs_epi16(lo, load256(y.add(Q8K_QS + 64 * j)));
                    let p1 = _mm256_maddubs_epi16(hi, load256(y.add(Q8K_QS + 64 * j + 32)));
                    isum = O::madd_i16(isum, p0, splat_u8_as_i16(sc, 2 * j));
                    isum_hi = O::madd_i16(isum_hi, p1, splat_u8_as_i16(sc, 2 * j + 1));
                }
                let isum = _mm256_add_epi32(isum, isum_hi);
                let (d, dmin) = fp16_pair(x);
                let msum = mins_dot_bsums(mins, y.add(Q8K_BSUMS));
                acc = fma_s(hsum_epi32(isum) as f32, d * yd, acc);
                acc = fma_s(-(msum as f32), dmin * yd, acc);
            }
            acc
        }
    }

    #[inline(always)]
    pub(super) unsafe fn q4k<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        unsafe { k_with_mins::<O, false>(w, a) }
    }

    #[inline(always)]
    pub(super) unsafe fn q5k<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        unsafe { k_with_mins::<O, true>(w, a) }
    }

    #[inline(always)]
    pub(super) unsafe fn q6k<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        let nb = (w.len() / Q6K_BYTES).min(a.len() / Q8K_BYTES);
        unsafe {
            let low = _mm256_set1_epi8(0x0F);
            let two = _mm256_set1_epi8(0x03);
            let mut acc = 0f32;
            for i in 0..nb {
                let x = w.as_ptr().add(i * Q6K_BYTES);
                let y = a.as_ptr().add(i * Q8K_BYTES);
                let sc = load128(x.add(192));
                // Levels are stored +32: subtract 32 * sum_j sc_j * bsum_j once per block.
                let sc16 = _mm256_cvtepi8_epi16(sc);
                let offset = _mm256_madd_epi16(load256(y.add(Q8K_BSUMS)), sc16);
                let mut isum =
                    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offset, 5));
                // A second integer chain (see `k_with_mins`).
                let mut isum_odd = _mm256_setzero_si256();
                for h in 0..2 {
                    let ql0 = load256(x.add(64 * h));
                    let ql1 = load256(x.add(64 * h + 32));
                    let qh = load256(x.add(128 + 32 * h));
                    let runs = [
                        _mm256_or_si256(
                            _mm256_and_si256(ql0, low),
                            _mm256_slli_epi16(_mm256_and_si256(qh, two), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(ql1, low),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2), two), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql0, 4), low),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 4), two), 4),
                        ),
                        _mm256_or_si256(
                            _mm256_and_si256(_mm256_srli_epi16(ql1, 4), low),
                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 6), two), 4),
                        ),
                    ];
                    for (t, q) in runs.into_iter().enumerate() {
                        let run = 4 * h + t;
                        let p = _mm256_maddubs_epi16(q, load256(y.add(Q8K_QS + 32 * run)));
                        // Scales 2run (first 16 levels) and 2run+1 (last 16), widened to i16.
                        let pick = _mm_set_epi64x(
                            0x0101_0101_0101_0101 * (2 * run as i64 + 1),
                            0x0101_0101_0101_0101 * (2 * run as i64),
                        );
                        let s = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, pick));
                        if t % 2 == 0 {
                            isum = O::madd_i16(isum, p, s);
                        } else {
                            isum_odd = O::madd_i16(isum_odd, p, s);
                        }
                    }
                }
                let isum = _mm256_add_epi32(isum, isum_odd);
                let d = fp16(x.add(208)) * f32_at(y);
                acc = fma_s(hsum_epi32(isum) as f32, d, acc);
            }
            acc
        }
    }

    #[inline(always)]
    pub(super) unsafe fn iq4xs<O: Ops>(w: &[u8], a: &[u8]) -> f32 {
        let nb = (w.len() / IQ4XS_BYTES).min(a.len() / Q8K_BYTES);
        unsafe {
            let table = _mm256_broadcastsi128_si256(load128(KVALUES_IQ4NL.as_ptr().cast()));
            let mut acc = 0f32;
            for i in 0..nb {
                let x = w.as_ptr().add(i * IQ4XS_BYTES);
                let y = a.as_ptr().add(i * Q8K_BYTES);
                let scales_h = u16::from_le_bytes([*x.add(2), *x.add(3)]);
                // Two integer chains (see `k_with_mins`).
                let (mut isum, mut isum_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                for ib in 0..8 {
                    let low = (*x.add(4 + ib / 2) >> (4 * (ib % 2))) & 0x0F;
                    let high = (scales_h >> (2 * ib)) & 3;
                    let ls = (i16::from(low) | ((high as i16) << 4)) - 32;
                    let v = _mm256_shuffle_epi8(table, nibbles_32(x.add(8 + 16 * ib)));
                    let yq = load256(y.add(Q8K_QS + 32 * ib));
                    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(yq, v));
                    if ib % 2 == 0 {
                        isum = O::madd_i16(isum, p, _mm256_set1_epi16(ls));
                    } else {
                        isum_odd = O::madd_i16(isum_odd, p, _mm256_set1_epi16(ls));
                    }
                }
                let isum = _mm256_add_epi32(isum, isum_odd);
                let d = fp16(x) * f32_at(y);
                acc = fma_s(hsum_epi32(isum) as f32, d, acc);
            }
            acc
        }
    }
}
