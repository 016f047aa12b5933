//! Micro-kernels of the attention loop: scores `Q·Kᵀ`, `exp(s - m)` with its sum, `P·V`
//! accumulation and f16 -> f32 rows, each in AVX-512, AVX2+FMA and scalar form.
//!
//! Every public function here is safe: it checks slice bounds once, then calls the variant of
//! the [`Isa`] it is given, capped at what the CPU has (`cpu::features`).
#![allow(unsafe_code)]

use crate::cpu::simd::{Isa, features};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `isa` capped at what this CPU has (so tests can ask for any variant).
fn usable(isa: Isa) -> Isa {
    isa.min(features().best_isa())
}

/// `s[r * s_stride + j] = dot(q[r], k[j])` for `rows` query rows (a multiple of 4) and
/// `keys` key rows, all `d` long and packed.
pub fn scores(
    isa: Isa,
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
    s_stride: usize,
) {
    assert!(
        rows.is_multiple_of(4) && keys <= s_stride,
        "scores: rows {rows}, keys {keys}"
    );
    assert!(q.len() >= rows * d && k.len() >= keys * d && s.len() >= rows * s_stride);
    match usable(isa) {
        // SAFETY: the CPU has the features (usable) and the bounds were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { scores_avx512(q, rows, k, keys, d, s, s_stride) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { scores_avx2(q, rows, k, keys, d, s, s_stride) },
        _ => scores_scalar(q, rows, k, keys, d, s, s_stride),
    }
}

/// `acc[r] += Σ_j p[r * p_stride + j] * v[j]` for `rows` rows (a multiple of 4).
pub fn accumulate(
    isa: Isa,
    p: &[f32],
    p_stride: usize,
    rows: usize,
    v: &[f32],
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    assert!(
        rows.is_multiple_of(4) && keys <= p_stride,
        "accumulate: rows {rows}, keys {keys}"
    );
    assert!(p.len() >= rows * p_stride && v.len() >= keys * d && acc.len() >= rows * d);
    match usable(isa) {
        // SAFETY: the CPU has the features (usable) and the bounds were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { accumulate_avx512(p, p_stride, rows, v, keys, d, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { accumulate_avx2(p, p_stride, rows, v, keys, d, acc) },
        _ => accumulate_scalar(p, p_stride, rows, v, keys, d, acc),
    }
}

/// `x[i] = exp(x[i] - m)` (0 for `-inf` entries); returns the sum. `m` must be finite and
/// every `x[i] - m <= 0` (it is the running maximum).
pub fn exp_sub_sum(isa: Isa, x: &mut [f32], m: f32) -> f32 {
    match usable(isa) {
        // SAFETY: the CPU has the features; the kernel only touches `x`.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { exp_sub_sum_avx512(x, m) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { exp_sub_sum_avx2(x, m) },
        _ => exp_sub_sum_scalar(x, m),
    }
}

/// Converts `src` into `dst` (same length).
pub fn f16_to_f32(isa: Isa, src: &[half::f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths");
    match usable(isa) {
        // SAFETY: the CPU has the features; lengths are equal.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { f16_to_f32_avx512(src, dst) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { f16_to_f32_avx2(src, dst) },
        _ => {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = s.to_f32();
            }
        }
    }
}

// ---------------------------------------------------------------- scalar twins (reference)

pub fn scores_scalar(
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
    s_stride: usize,
) {
    for r in 0..rows {
        let qr = &q[r * d..(r + 1) * d];
        for j in 0..keys {
            let kj = &k[j * d..(j + 1) * d];
            s[r * s_stride + j] = qr.iter().zip(kj).map(|(a, b)| a * b).sum();
        }
    }
}

pub fn accumulate_scalar(
    p: &[f32],
    p_stride: usize,
    rows: usize,
    v: &[f32],
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    for r in 0..rows {
        let ar = &mut acc[r * d..(r + 1) * d];
        for j in 0..keys {
            let w = p[r * p_stride + j];
            for (a, &x) in ar.iter_mut().zip(&v[j * d..(j + 1) * d]) {
                *a += w * x;
            }
        }
    }
}

pub fn exp_sub_sum_scalar(x: &mut [f32], m: f32) -> f32 {
    let mut sum = 0.0;
    for e in x {
        *e = (*e - m).exp();
        sum += *e;
    }
    sum
}

// ---------------------------------------------------------------- exp polynomial (Cephes)

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Below this `exp` is under f32's normal range; such weights are flushed to 0.
const EXP_MIN: f32 = -87.3;
const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

// ---------------------------------------------------------------- AVX-512

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_avx512(
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
    s_stride: usize,
) {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let full = d - d % 16;
        let tail: __mmask16 = ((1u32 << (d % 16)) - 1) as __mmask16;
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            let (q0, q1, q2, q3) = (qp, qp.add(d), qp.add(2 * d), qp.add(3 * d));
            for j in 0..keys {
                let kp = k.as_ptr().add(j * d);
                let mut a = [_mm512_setzero_ps(); 4];
                let mut c = 0;
                while c < full {
                    let kv = _mm512_loadu_ps(kp.add(c));
                    a[0] = _mm512_fmadd_ps(_mm512_loadu_ps(q0.add(c)), kv, a[0]);
                    a[1] = _mm512_fmadd_ps(_mm512_loadu_ps(q1.add(c)), kv, a[1]);
                    a[2] = _mm512_fmadd_ps(_mm512_loadu_ps(q2.add(c)), kv, a[2]);
                    a[3] = _mm512_fmadd_ps(_mm512_loadu_ps(q3.add(c)), kv, a[3]);
                    c += 16;
                }
                if tail != 0 {
                    let kv = _mm512_maskz_loadu_ps(tail, kp.add(c));
                    a[0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q0.add(c)), kv, a[0]);
                    a[1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q1.add(c)), kv, a[1]);
                    a[2] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q2.add(c)), kv, a[2]);
                    a[3] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q3.add(c)), kv, a[3]);
                }
                for (i, acc) in a.iter().enumerate() {
                    s[(r + i) * s_stride + j] = _mm512_reduce_add_ps(*acc);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_avx512(
    p: &[f32],
    p_stride: usize,
    rows: usize,
    v: &[f32],
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        for r in (0..rows).step_by(4) {
            let pp = p.as_ptr().add(r * p_stride);
            let ap = acc.as_mut_ptr().add(r * d);
            let mut c = 0;
            while c < d {
                let m: __mmask16 = if d - c >= 16 {
                    0xffff
                } else {
                    ((1u32 << (d - c)) - 1) as __mmask16
                };
                let mut a = [
                    _mm512_maskz_loadu_ps(m, ap.add(c)),
                    _mm512_maskz_loadu_ps(m, ap.add(d + c)),
                    _mm512_maskz_loadu_ps(m, ap.add(2 * d + c)),
                    _mm512_maskz_loadu_ps(m, ap.add(3 * d + c)),
                ];
                for j in 0..keys {
                    let vv = _mm512_maskz_loadu_ps(m, v.as_ptr().add(j * d + c));
                    a[0] = _mm512_fmadd_ps(_mm512_set1_ps(*pp.add(j)), vv, a[0]);
                    a[1] = _mm512_fmadd_ps(_mm512_set1_ps(*pp.add(p_stride + j)), vv, a[1]);
                    a[2] = _mm512_fmadd_ps(_mm512_set1_ps(*pp.add(2 * p_stride + j)), vv, a[2]);
                    a[3] = _mm512_fmadd_ps(_mm512_set1_ps(*pp.add(3 * p_stride + j)), vv, a[3]);
                }
                for (i, x) in a.iter().enumerate() {
                    _mm512_mask_storeu_ps(ap.add(i * d + c), m, *x);
                }
                c += 16;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp512(x: __m512) -> __m512 {
    // exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2 / 2.
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut y = _mm512_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
    }
    let r2 = _mm512_mul_ps(r, r);
    let y = _mm512_fmadd_ps(y, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    _mm512_scalef_ps(y, n)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_sub_sum_avx512(x: &mut [f32], m: f32) -> f32 {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let mv = _mm512_set1_ps(m);
        let lo = _mm512_set1_ps(EXP_MIN);
        let mut sum = _mm512_setzero_ps();
        let mut i = 0;
        while i < x.len() {
            let left = x.len() - i;
            let mask: __mmask16 = if left >= 16 {
                0xffff
            } else {
                ((1u32 << left) - 1) as __mmask16
            };
            let p = x.as_mut_ptr().add(i);
            let t = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), mv);
            // Lanes under EXP_MIN (incl. -inf, masked keys) become exactly 0.
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(t, lo) & mask;
            let e = _mm512_maskz_mov_ps(keep, exp512(_mm512_max_ps(t, lo)));
            _mm512_mask_storeu_ps(p, mask, e);
            sum = _mm512_add_ps(sum, e);
            i += 16;
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f16_to_f32_avx512(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let n = src.len() - src.len() % 16;
        let mut i = 0;
        while i < n {
            let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
            i += 16;
        }
        for j in n..src.len() {
            dst[j] = src[j].to_f32();
        }
    }
}

// ---------------------------------------------------------------- AVX2 + FMA + F16C

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
    s_stride: usize,
) {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let full = d - d % 8;
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            for j in 0..keys {
                let kp = k.as_ptr().add(j * d);
                let mut a = [_mm256_setzero_ps(); 4];
                let mut c = 0;
                while c < full {
                    let kv = _mm256_loadu_ps(kp.add(c));
                    for (i, acc) in a.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i * d + c)), kv, *acc);
                    }
                    c += 8;
                }
                for (i, acc) in a.iter().enumerate() {
                    let mut t = hsum256(*acc);
                    for cc in full..d {
                        t += *qp.add(i * d + cc) * *kp.add(cc);
                    }
                    s[(r + i) * s_stride + j] = t;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(
    p: &[f32],
    p_stride: usize,
    rows: usize,
    v: &[f32],
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let full = d - d % 8;
        for r in (0..rows).step_by(4) {
            let pp = p.as_ptr().add(r * p_stride);
            let ap = acc.as_mut_ptr().add(r * d);
            let mut c = 0;
            while c < full {
                let mut a: [__m256; 4] =
                    std::array::from_fn(|i| _mm256_loadu_ps(ap.add(i * d + c)));
                for j in 0..keys {
                    let vv = _mm256_loadu_ps(v.as_ptr().add(j * d + c));
                    for (i, x) in a.iter_mut().enumerate() {
                        *x = _mm256_fmadd_ps(_mm256_set1_ps(*pp.add(i * p_stride + j)), vv, *x);
                    }
                }
                for (i, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(ap.add(i * d + c), *x);
                }
                c += 8;
            }
            for i in 0..4 {
                for cc in full..d {
                    let mut t = *ap.add(i * d + cc);
                    for j in 0..keys {
                        t += *pp.add(i * p_stride + j) * *v.as_ptr().add(j * d + cc);
                    }
                    *ap.add(i * d + cc) = t;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp256(x: __m256) -> __m256 {
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut y = _mm256_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let r2 = _mm256_mul_ps(r, r);
    let y = _mm256_fmadd_ps(y, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
    // 2^n through the exponent field; n >= -126 because inputs are clamped to EXP_MIN.
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(bits))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_avx2(x: &mut [f32], m: f32) -> f32 {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let mv = _mm256_set1_ps(m);
        let lo = _mm256_set1_ps(EXP_MIN);
        let mut sum = _mm256_setzero_ps();
        let full = x.len() - x.len() % 8;
        let mut i = 0;
        while i < full {
            let p = x.as_mut_ptr().add(i);
            let t = _mm256_sub_ps(_mm256_loadu_ps(p), mv);
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(t, lo);
            let e = _mm256_and_ps(keep, exp256(_mm256_max_ps(t, lo)));
            _mm256_storeu_ps(p, e);
            sum = _mm256_add_ps(sum, e);
            i += 8;
        }
        hsum256(sum) + exp_sub_sum_scalar(&mut x[full..], m)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_to_f32_avx2(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: callers checked the slice bounds this pointer arithmetic relies on.
    unsafe {
        let n = src.len() - src.len() % 8;
        let mut i = 0;
        while i < n {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            i += 8;
        }
        for j in n..src.len() {
            dst[j] = src[j].to_f32();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0
                    - 0.5
            })
            .collect()
    }

    fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1e-3))
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_isa_matches_scalar_with_tails() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            if usable(isa) != isa {
                println!("SKIPPED {isa:?} (not on this CPU)");
                continue;
            }
            for d in [1, 7, 8, 15, 16, 17, 64, 72, 80, 129] {
                let (rows, keys, stride) = (8, 13, 16);
                let q = data(rows * d, 1);
                let k = data(keys * d, 2);
                let mut s = vec![0.0; rows * stride];
                let mut want = s.clone();
                scores(isa, &q, rows, &k, keys, d, &mut s, stride);
                scores_scalar(&q, rows, &k, keys, d, &mut want, stride);
                assert!(max_rel(&s, &want) < 1e-4, "{isa:?} scores d={d}");

                let p = data(rows * stride, 3);
                let mut acc = data(rows * d, 4);
                let mut want = acc.clone();
                accumulate(isa, &p, stride, rows, &k, keys, d, &mut acc);
                accumulate_scalar(&p, stride, rows, &k, keys, d, &mut want);
                assert!(max_rel(&acc, &want) < 1e-4, "{isa:?} accumulate d={d}");

                let h: Vec<half::f16> = q.iter().map(|&x| half::f16::from_f32(x)).collect();
                let mut f = vec![0.0; h.len()];
                f16_to_f32(isa, &h, &mut f);
                assert!(f.iter().zip(&h).all(|(a, b)| *a == b.to_f32()));
            }
            for n in [0, 1, 5, 8, 16, 17, 33] {
                let mut x: Vec<f32> = data(n, 5).iter().map(|v| v * 200.0).collect();
                if n > 2 {
                    x[1] = f32::NEG_INFINITY;
                }
                let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max).max(0.0);
                let mut want = x.clone();
                let mut got = x.clone();
                let ws = exp_sub_sum_scalar(&mut want, m);
                let gs = exp_sub_sum(isa, &mut got, m);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 2e-7 * w.abs() + 1e-37,
                        "{isa:?} exp {g} vs {w}"
                    );
                }
                assert!((gs - ws).abs() <= 1e-6 * ws.abs() + 1e-30);
                if n > 2 {
                    assert_eq!(got[1], 0.0);
                }
            }
        }
    }
}
