//! Micro-kernels of the attention loop, each in AVX-512, AVX2+FMA and scalar form:
//! scores `Q·Kᵀ` against a transposed key block (keys across SIMD lanes, so no horizontal
//! sums), `s·scale + bias` with its maximum, `exp(s - m)` with its sum, `P·V` accumulation
//! and f16 -> f32 rows.
//!
//! Every public function here is safe: it checks slice bounds once, then runs the variant of
//! the [`Isa`] it is given, capped at what the CPU has (`cpu::features`).
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use crate::cpu::simd::{Isa, features};

/// Keys per block: the width of a transposed key block and of a score row.
pub const KEYS: usize = 64;

/// `isa` capped at what this CPU has (so tests can ask for any variant).
fn usable(isa: Isa) -> Isa {
    isa.min(features().best_isa())
}

/// `s[r * KEYS + j] = Σ_c q[r * d + c] · kt[c * KEYS + j]` for `rows` query rows (a multiple
/// of 4) and all `KEYS` columns of the transposed key block `kt` (`[d, KEYS]`).
pub fn scores(isa: Isa, q: &[f32], rows: usize, kt: &[f32], d: usize, s: &mut [f32]) {
    assert!(rows.is_multiple_of(4), "scores: rows {rows}");
    assert!(q.len() >= rows * d && kt.len() >= d * KEYS && s.len() >= rows * KEYS);
    match usable(isa) {
        // SAFETY: the CPU has the features (usable) and the bounds were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { scores_avx512(q, rows, kt, d, s) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { scores_avx2(q, rows, kt, d, s) },
        _ => scores_scalar(q, rows, kt, d, s),
    }
}

/// `s[r * KEYS + j] = dot(q[r], k[j])` for `j < keys` with `k` packed `[keys, d]` (no
/// transpose): better than [`scores`] for the few rows of a decode step.
pub fn scores_rows(
    isa: Isa,
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
) {
    assert!(
        rows.is_multiple_of(4) && keys <= KEYS,
        "scores_rows: rows {rows}, keys {keys}"
    );
    assert!(q.len() >= rows * d && k.len() >= keys * d && s.len() >= rows * KEYS);
    match usable(isa) {
        // SAFETY: the CPU has the features (usable) and the bounds were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { scores_rows_avx512(q, rows, k, keys, d, s) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { scores_rows_avx2(q, rows, k, keys, d, s) },
        _ => scores_rows_scalar(q, rows, k, keys, d, s),
    }
}

/// `acc[r] += Σ_{j < keys} p[r * KEYS + j] · v[j * v_stride..][..d]` for `rows` rows (a
/// multiple of 4) of length `d` (`v_stride >= d` lets V rows be read in place).
pub fn accumulate(
    isa: Isa,
    p: &[f32],
    rows: usize,
    v: &[f32],
    v_stride: usize,
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    assert!(
        rows.is_multiple_of(4) && keys <= KEYS,
        "accumulate: rows {rows}, keys {keys}"
    );
    assert!(v_stride >= d && (keys == 0 || v.len() >= (keys - 1) * v_stride + d));
    assert!(p.len() >= rows * KEYS && acc.len() >= rows * d);
    match usable(isa) {
        // SAFETY: the CPU has the features (usable) and the bounds were checked above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { accumulate_avx512(p, rows, v, v_stride, keys, d, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { accumulate_avx2(p, rows, v, v_stride, keys, d, acc) },
        _ => accumulate_scalar(p, rows, v, v_stride, keys, d, acc),
    }
}

/// `s[i] = s[i] · scale + bias[i]`; returns the maximum (`-inf` if all are).
pub fn scale_add_max(isa: Isa, s: &mut [f32], scale: f32, bias: &[f32]) -> f32 {
    assert_eq!(s.len(), bias.len(), "scale_add_max: lengths");
    match usable(isa) {
        // SAFETY: the CPU has the features; lengths are equal.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { scale_add_max_avx512(s, scale, bias) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { scale_add_max_avx2(s, scale, bias) },
        _ => scale_add_max_scalar(s, scale, bias),
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

pub fn scores_scalar(q: &[f32], rows: usize, kt: &[f32], d: usize, s: &mut [f32]) {
    for r in 0..rows {
        let sr = &mut s[r * KEYS..(r + 1) * KEYS];
        sr.fill(0.0);
        for c in 0..d {
            let qc = q[r * d + c];
            for (x, &k) in sr.iter_mut().zip(&kt[c * KEYS..(c + 1) * KEYS]) {
                *x += qc * k;
            }
        }
    }
}

pub fn scores_rows_scalar(q: &[f32], rows: usize, k: &[f32], keys: usize, d: usize, s: &mut [f32]) {
    for r in 0..rows {
        for j in 0..keys {
            let dot = q[r * d..(r + 1) * d].iter().zip(&k[j * d..(j + 1) * d]);
            s[r * KEYS + j] = dot.map(|(a, b)| a * b).sum();
        }
    }
}

pub fn accumulate_scalar(
    p: &[f32],
    rows: usize,
    v: &[f32],
    v_stride: usize,
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    for r in 0..rows {
        let ar = &mut acc[r * d..(r + 1) * d];
        for j in 0..keys {
            let w = p[r * KEYS + j];
            for (a, &x) in ar.iter_mut().zip(&v[j * v_stride..j * v_stride + d]) {
                *a += w * x;
            }
        }
    }
}

pub fn scale_add_max_scalar(s: &mut [f32], scale: f32, bias: &[f32]) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for (x, b) in s.iter_mut().zip(bias) {
        *x = *x * scale + b;
        m = m.max(*x);
    }
    m
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

/// Lanes `0..n` (n < 16 gives a partial mask, n >= 16 all lanes).
#[cfg(target_arch = "x86_64")]
fn lanes16(n: usize) -> __mmask16 {
    if n >= 16 {
        0xffff
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_avx512(q: &[f32], rows: usize, kt: &[f32], d: usize, s: &mut [f32]) {
    // SAFETY: callers checked q (rows·d), kt (d·KEYS) and s (rows·KEYS).
    unsafe {
        for r in (0..rows).step_by(4) {
            // 4 rows × 64 keys = 16 accumulators; per c: 4 key loads, 4 broadcasts, 16 FMAs.
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            let qp = q.as_ptr().add(r * d);
            for c in 0..d {
                let kp = kt.as_ptr().add(c * KEYS);
                let k = [
                    _mm512_loadu_ps(kp),
                    _mm512_loadu_ps(kp.add(16)),
                    _mm512_loadu_ps(kp.add(32)),
                    _mm512_loadu_ps(kp.add(48)),
                ];
                for (i, row) in acc.iter_mut().enumerate() {
                    let qb = _mm512_set1_ps(*qp.add(i * d + c));
                    for (a, kv) in row.iter_mut().zip(&k) {
                        *a = _mm512_fmadd_ps(qb, *kv, *a);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate() {
                let sp = s.as_mut_ptr().add((r + i) * KEYS);
                for (t, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(sp.add(16 * t), *a);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scores_rows_avx512(
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
) {
    // SAFETY: callers checked q (rows·d), k (keys·d) and s (rows·KEYS); masked lanes unread.
    unsafe {
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            for j in 0..keys {
                let kp = k.as_ptr().add(j * d);
                let mut a = [_mm512_setzero_ps(); 4];
                for c in (0..d).step_by(16) {
                    let m = lanes16(d - c);
                    let kv = _mm512_maskz_loadu_ps(m, kp.add(c));
                    for (i, acc) in a.iter_mut().enumerate() {
                        let qv = _mm512_maskz_loadu_ps(m, qp.add(i * d + c));
                        *acc = _mm512_fmadd_ps(qv, kv, *acc);
                    }
                }
                for (i, acc) in a.iter().enumerate() {
                    *s.as_mut_ptr().add((r + i) * KEYS + j) = _mm512_reduce_add_ps(*acc);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_avx512(
    p: &[f32],
    rows: usize,
    v: &[f32],
    v_stride: usize,
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    // SAFETY: callers checked p (rows·KEYS), v (keys rows at v_stride) and acc (rows·d); masked lanes are
    // neither read nor written.
    unsafe {
        for r in (0..rows).step_by(4) {
            let pp = p.as_ptr().add(r * KEYS);
            let ap = acc.as_mut_ptr().add(r * d);
            // 4 rows × 32 columns = 8 accumulators; per key: 2 loads, 4 broadcasts, 8 FMAs.
            for c in (0..d).step_by(32) {
                let m = [lanes16(d - c), lanes16((d - c).saturating_sub(16))];
                let mut a = [[_mm512_setzero_ps(); 2]; 4];
                for (i, row) in a.iter_mut().enumerate() {
                    for (h, x) in row.iter_mut().enumerate() {
                        *x = _mm512_maskz_loadu_ps(m[h], ap.add(i * d + c + 16 * h));
                    }
                }
                for j in 0..keys {
                    let vp = v.as_ptr().add(j * v_stride + c);
                    let vv = [
                        _mm512_maskz_loadu_ps(m[0], vp),
                        _mm512_maskz_loadu_ps(m[1], vp.add(16)),
                    ];
                    for (i, row) in a.iter_mut().enumerate() {
                        let w = _mm512_set1_ps(*pp.add(i * KEYS + j));
                        row[0] = _mm512_fmadd_ps(w, vv[0], row[0]);
                        row[1] = _mm512_fmadd_ps(w, vv[1], row[1]);
                    }
                }
                for (i, row) in a.iter().enumerate() {
                    for (h, x) in row.iter().enumerate() {
                        _mm512_mask_storeu_ps(ap.add(i * d + c + 16 * h), m[h], *x);
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scale_add_max_avx512(s: &mut [f32], scale: f32, bias: &[f32]) -> f32 {
    // SAFETY: callers checked that s and bias have the same length; masked lanes untouched.
    unsafe {
        let sc = _mm512_set1_ps(scale);
        let mut mx = _mm512_set1_ps(f32::NEG_INFINITY);
        for i in (0..s.len()).step_by(16) {
            let m = lanes16(s.len() - i);
            let p = s.as_mut_ptr().add(i);
            let x = _mm512_fmadd_ps(
                _mm512_maskz_loadu_ps(m, p),
                sc,
                _mm512_maskz_loadu_ps(m, bias.as_ptr().add(i)),
            );
            _mm512_mask_storeu_ps(p, m, x);
            mx = _mm512_mask_max_ps(mx, m, mx, x);
        }
        _mm512_reduce_max_ps(mx)
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
    // SAFETY: masked lanes past the end of x are neither read nor written.
    unsafe {
        let mv = _mm512_set1_ps(m);
        let lo = _mm512_set1_ps(EXP_MIN);
        let mut sum = _mm512_setzero_ps();
        for i in (0..x.len()).step_by(16) {
            let mask = lanes16(x.len() - i);
            let p = x.as_mut_ptr().add(i);
            let t = _mm512_sub_ps(_mm512_maskz_loadu_ps(mask, p), mv);
            // Lanes under EXP_MIN (incl. -inf, masked keys) become exactly 0.
            let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(t, lo) & mask;
            let e = _mm512_maskz_mov_ps(keep, exp512(_mm512_max_ps(t, lo)));
            _mm512_mask_storeu_ps(p, mask, e);
            sum = _mm512_add_ps(sum, e);
        }
        _mm512_reduce_add_ps(sum)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn f16_to_f32_avx512(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: callers checked equal lengths; full 16-lane groups only, then a scalar tail.
    unsafe {
        let n = src.len() - src.len() % 16;
        for i in (0..n).step_by(16) {
            let h = _mm256_loadu_si256(src.as_ptr().add(i) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
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
unsafe fn scores_avx2(q: &[f32], rows: usize, kt: &[f32], d: usize, s: &mut [f32]) {
    // SAFETY: callers checked q (rows·d), kt (d·KEYS) and s (rows·KEYS).
    unsafe {
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            // 4 rows × 16 keys = 8 accumulators per pass, 4 passes over the 64 keys.
            for j0 in (0..KEYS).step_by(16) {
                let mut acc = [[_mm256_setzero_ps(); 2]; 4];
                for c in 0..d {
                    let kp = kt.as_ptr().add(c * KEYS + j0);
                    let k = [_mm256_loadu_ps(kp), _mm256_loadu_ps(kp.add(8))];
                    for (i, row) in acc.iter_mut().enumerate() {
                        let qb = _mm256_set1_ps(*qp.add(i * d + c));
                        row[0] = _mm256_fmadd_ps(qb, k[0], row[0]);
                        row[1] = _mm256_fmadd_ps(qb, k[1], row[1]);
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    let sp = s.as_mut_ptr().add((r + i) * KEYS + j0);
                    _mm256_storeu_ps(sp, row[0]);
                    _mm256_storeu_ps(sp.add(8), row[1]);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_rows_avx2(
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    s: &mut [f32],
) {
    // SAFETY: callers checked q (rows·d), k (keys·d) and s (rows·KEYS); vector loads stay
    // below `full`, the rest is scalar.
    unsafe {
        let full = d - d % 8;
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            for j in 0..keys {
                let kp = k.as_ptr().add(j * d);
                let mut a = [_mm256_setzero_ps(); 4];
                for c in (0..full).step_by(8) {
                    let kv = _mm256_loadu_ps(kp.add(c));
                    for (i, acc) in a.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(i * d + c)), kv, *acc);
                    }
                }
                for (i, acc) in a.iter().enumerate() {
                    let mut t = hsum256(*acc);
                    for c in full..d {
                        t += *qp.add(i * d + c) * *kp.add(c);
                    }
                    *s.as_mut_ptr().add((r + i) * KEYS + j) = t;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_avx2(
    p: &[f32],
    rows: usize,
    v: &[f32],
    v_stride: usize,
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    // SAFETY: callers checked p (rows·KEYS), v (keys rows at v_stride) and acc (rows·d); vector loads stay
    // below `full`, the rest is scalar.
    unsafe {
        let full = d - d % 8;
        for r in (0..rows).step_by(4) {
            let pp = p.as_ptr().add(r * KEYS);
            let ap = acc.as_mut_ptr().add(r * d);
            for c in (0..full).step_by(8) {
                let mut a: [__m256; 4] =
                    std::array::from_fn(|i| _mm256_loadu_ps(ap.add(i * d + c)));
                for j in 0..keys {
                    let vv = _mm256_loadu_ps(v.as_ptr().add(j * v_stride + c));
                    for (i, x) in a.iter_mut().enumerate() {
                        *x = _mm256_fmadd_ps(_mm256_set1_ps(*pp.add(i * KEYS + j)), vv, *x);
                    }
                }
                for (i, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(ap.add(i * d + c), *x);
                }
            }
            for i in 0..4 {
                for cc in full..d {
                    let mut t = *ap.add(i * d + cc);
                    for j in 0..keys {
                        t += *pp.add(i * KEYS + j) * *v.as_ptr().add(j * v_stride + cc);
                    }
                    *ap.add(i * d + cc) = t;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scale_add_max_avx2(s: &mut [f32], scale: f32, bias: &[f32]) -> f32 {
    // SAFETY: callers checked equal lengths; vector accesses stay below `full`.
    unsafe {
        let full = s.len() - s.len() % 8;
        let sc = _mm256_set1_ps(scale);
        let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..full).step_by(8) {
            let p = s.as_mut_ptr().add(i);
            let x = _mm256_fmadd_ps(
                _mm256_loadu_ps(p),
                sc,
                _mm256_loadu_ps(bias.as_ptr().add(i)),
            );
            _mm256_storeu_ps(p, x);
            mx = _mm256_max_ps(mx, x);
        }
        let hi = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps::<1>(mx));
        let hi = _mm_max_ps(hi, _mm_movehl_ps(hi, hi));
        let hi = _mm_max_ss(hi, _mm_movehdup_ps(hi));
        _mm_cvtss_f32(hi).max(scale_add_max_scalar(&mut s[full..], scale, &bias[full..]))
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
    // SAFETY: vector accesses stay below `full`, the rest is scalar.
    unsafe {
        let mv = _mm256_set1_ps(m);
        let lo = _mm256_set1_ps(EXP_MIN);
        let mut sum = _mm256_setzero_ps();
        let full = x.len() - x.len() % 8;
        for i in (0..full).step_by(8) {
            let p = x.as_mut_ptr().add(i);
            let t = _mm256_sub_ps(_mm256_loadu_ps(p), mv);
            let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(t, lo);
            let e = _mm256_and_ps(keep, exp256(_mm256_max_ps(t, lo)));
            _mm256_storeu_ps(p, e);
            sum = _mm256_add_ps(sum, e);
        }
        hsum256(sum) + exp_sub_sum_scalar(&mut x[full..], m)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_to_f32_avx2(src: &[half::f16], dst: &mut [f32]) {
    // SAFETY: callers checked equal lengths; full 8-lane groups only, then a scalar tail.
    unsafe {
        let n = src.len() - src.len() % 8;
        for i in (0..n).step_by(8) {
            let h = _mm_loadu_si128(src.as_ptr().add(i) as *const __m128i);
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
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
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f32::max)
    }

    #[test]
    fn every_isa_matches_scalar_with_tails() {
        for isa in [Isa::Avx512, Isa::Avx2] {
            if usable(isa) != isa {
                println!("SKIPPED {isa:?} (not on this CPU)");
                continue;
            }
            for d in [1, 7, 8, 15, 16, 17, 31, 33, 64, 72, 80, 129] {
                let rows = 8;
                let q = data(rows * d, 1);
                let kt = data(d * KEYS, 2);
                let mut s = vec![0.0; rows * KEYS];
                let mut want = s.clone();
                scores(isa, &q, rows, &kt, d, &mut s);
                scores_scalar(&q, rows, &kt, d, &mut want);
                assert!(max_rel(&s, &want) < 1e-5, "{isa:?} scores d={d}");

                let k = data(KEYS * d, 6);
                for keys in [1, 13, KEYS] {
                    scores_rows(isa, &q, rows, &k, keys, d, &mut s);
                    scores_rows_scalar(&q, rows, &k, keys, d, &mut want);
                    for r in 0..rows {
                        let (g, w) = (
                            &s[r * KEYS..r * KEYS + keys],
                            &want[r * KEYS..r * KEYS + keys],
                        );
                        assert!(
                            max_rel(g, w) < 1e-5,
                            "{isa:?} scores_rows d={d} keys={keys}"
                        );
                    }
                }

                for (keys, stride) in [(1, d), (13, d + 3), (KEYS, d)] {
                    let p = data(rows * KEYS, 3);
                    let v = data(keys * stride, 5);
                    let mut acc = data(rows * d, 4);
                    let mut want = acc.clone();
                    accumulate(isa, &p, rows, &v, stride, keys, d, &mut acc);
                    accumulate_scalar(&p, rows, &v, stride, keys, d, &mut want);
                    assert!(
                        max_rel(&acc, &want) < 1e-5,
                        "{isa:?} accumulate d={d} keys={keys}"
                    );
                }

                let h: Vec<half::f16> = q.iter().map(|&x| half::f16::from_f32(x)).collect();
                let mut f = vec![0.0; h.len()];
                f16_to_f32(isa, &h, &mut f);
                assert!(f.iter().zip(&h).all(|(a, b)| *a == b.to_f32()));
            }
            for n in [0, 1, 5, 8, 16, 17, 33, 64] {
                let mut x: Vec<f32> = data(n, 5).iter().map(|v| v * 200.0).collect();
                let mut bias = vec![0.0; n];
                if n > 2 {
                    bias[1] = f32::NEG_INFINITY;
                }
                let mut want = x.clone();
                let wm = scale_add_max_scalar(&mut want, 0.5, &bias);
                let gm = scale_add_max(isa, &mut x, 0.5, &bias);
                assert!(
                    (gm - wm).abs() <= 1e-5 * wm.abs() || gm == wm,
                    "{isa:?} max n={n}"
                );
                assert!(max_rel(&x, &want) < 1e-5, "{isa:?} scale_add_max n={n}");

                let m = wm.max(0.0);
                let ws = exp_sub_sum_scalar(&mut want, m);
                let gs = exp_sub_sum(isa, &mut x, m);
                for (g, w) in x.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 2e-7 * w.abs() + 1e-37,
                        "{isa:?} exp {g} vs {w}"
                    );
                }
                assert!((gs - ws).abs() <= 1e-6 * ws.abs() + 1e-30);
                if n > 2 {
                    assert_eq!(x[1], 0.0);
                }
            }
        }
    }
}
