//! Micro-kernels of the attention loop: scores `Q·Kᵀ` against a transposed key block (keys
//! across SIMD lanes, so no horizontal sums), `s·scale + bias` with its maximum,
//! `exp(s - m)` with its sum, `P·V` accumulation and f16 -> f32 rows.
//!
//! Each kernel is written once, generic over [`Simd`], and compiled for AVX-512 and AVX2 by
//! [`dispatch!`]; register tiles follow the lane count (4 rows × 64 keys of scores on
//! AVX-512, 4 rows × 16 keys per pass on AVX2). `exp` is the one of `cpu::math`. The scalar
//! twins below are the reference the tests hold every path to.
//!
//! Every public function here is safe: it checks slice bounds once, then runs the variant of
//! the [`Isa`] it is given, capped at what the CPU has.
#![allow(unsafe_code)]

use crate::cpu::math;
use crate::cpu::simd::{Isa, Simd, dispatch, features};

/// Keys per block: the width of a transposed key block and of a score row.
pub const KEYS: usize = 64;

/// `isa` capped at what this CPU has (so tests can ask for any variant).
fn usable(isa: Isa) -> Isa {
    isa.min(features().best_isa())
}

/// Asks the cache to fetch `rows` rows of `row_bytes` bytes, `stride_bytes` apart, from
/// `data` (a hint: nothing is read, no bound can be crossed). A decode step's K/V rows were
/// written one token ago and have since been pushed out to memory by the weights streamed
/// through the caches; fetched one by one as the kernel reaches them, each costs a full
/// memory latency.
pub fn prefetch_rows(data: &[u8], rows: usize, stride_bytes: usize, row_bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for r in 0..rows {
        let start = r * stride_bytes;
        let end = (start + row_bytes).min(data.len());
        for at in (start..end).step_by(64) {
            // SAFETY: `at` is inside `data`; a prefetch reads nothing architecturally.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    data.as_ptr().add(at).cast(),
                )
            };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, rows, stride_bytes, row_bytes);
}

/// `s[r * KEYS + j] = Σ_c q[r * d + c] · kt[c * KEYS + j]` for `rows` query rows (a multiple
/// of 4) and all `KEYS` columns of the transposed key block `kt` (`[d, KEYS]`).
pub fn scores(isa: Isa, q: &[f32], rows: usize, kt: &[f32], d: usize, s: &mut [f32]) {
    assert!(rows.is_multiple_of(4), "scores: rows {rows}");
    assert!(q.len() >= rows * d && kt.len() >= d * KEYS && s.len() >= rows * KEYS);
    dispatch!(usable(isa), scores_simd, scores_scalar, (q: &[f32], rows: usize, kt: &[f32], d: usize, s: &mut [f32]))
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
    dispatch!(usable(isa), scores_rows_simd, scores_rows_scalar, (q: &[f32], rows: usize, k: &[f32], keys: usize, d: usize, s: &mut [f32]))
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
    dispatch!(usable(isa), accumulate_simd, accumulate_scalar, (p: &[f32], rows: usize, v: &[f32], v_stride: usize, keys: usize, d: usize, acc: &mut [f32]))
}

/// One key block's online-softmax step for score rows `0..rows` (`s`, rows of [`KEYS`]):
/// each row becomes `s · scale + bias` (bias row `r / group` of `bias`; no bias: every key
/// visible, the same values as a bias of zeros), its block maximum
/// raises the running max `m[r]` (shrinking `l[r]` and the accumulator row `acc[r]`, of
/// length `d`, to match), then `exp(s - m[r])` with its sum added to `l[r]`. A row whose
/// keys are all masked becomes 0 and keeps its state.
#[allow(clippy::too_many_arguments)]
pub fn softmax_block(
    isa: Isa,
    s: &mut [f32],
    rows: usize,
    group: usize,
    bias: Option<&[f32]>,
    scale: f32,
    m: &mut [f32],
    l: &mut [f32],
    acc: &mut [f32],
    d: usize,
) {
    assert!(group > 0 && s.len() >= rows * KEYS);
    assert!(bias.is_none_or(|b| b.len() >= rows.div_ceil(group) * KEYS));
    assert!(m.len() >= rows && l.len() >= rows && acc.len() >= rows * d);
    dispatch!(usable(isa), softmax_block_simd, softmax_block_scalar,
        (s: &mut [f32], rows: usize, group: usize, bias: Option<&[f32]>, scale: f32, m: &mut [f32], l: &mut [f32], acc: &mut [f32], d: usize))
}

/// Converts `src` into `dst` (same length).
pub fn f16_to_f32(isa: Isa, src: &[half::f16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "f16_to_f32: lengths");
    dispatch!(usable(isa), f16_to_f32_simd, f16_to_f32_scalar, (src: &[half::f16], dst: &mut [f32]))
}

/// `kt[c * KEYS + j] = k[j * d + c]` for `j < keys`, `c < d` (the other entries of `kt` are
/// left alone): a key block `[keys, d]` to keys across lanes.
pub fn transpose_keys(isa: Isa, k: &[f32], keys: usize, d: usize, kt: &mut [f32]) {
    transpose_to_lanes(isa, k, keys, d, d, kt);
}

/// `dst[c * KEYS + j] = src[j * stride + c]` for `j < rows <= KEYS`, `c < cols` (other
/// entries of `dst` are left alone): rows of a matrix to lanes, 16 x 16 tiles through
/// registers on AVX-512, the rest in 8 x 8 tiles of scalars. Also packs the GEMM's weight
/// panels, whose 64 weight rows per panel match `KEYS`.
pub fn transpose_to_lanes(
    isa: Isa,
    src: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    dst: &mut [f32],
) {
    assert!(rows <= KEYS && cols <= stride && dst.len() >= cols * KEYS);
    assert!(rows == 0 || src.len() >= (rows - 1) * stride + cols);
    let (mut rows16, mut cols16) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if usable(isa) >= Isa::Avx512 {
        rows16 = rows - rows % 16;
        cols16 = cols - cols % 16;
        // SAFETY: AVX-512 F is present (`usable`); the tiles stay below rows16 x cols16,
        // inside the lengths checked above.
        unsafe { x86::transpose16(src, rows16, stride, cols16, dst) };
    }
    let _ = isa;
    // The parts the register tiles left: columns past cols16 of every row, rows past rows16.
    transpose_scalar(src, 0, rows16, cols16, cols, stride, dst);
    transpose_scalar(src, rows16, rows, 0, cols, stride, dst);
}

/// Scalar transpose of rows `j0..j1`, columns `c0..c1` (row stride `d`), in 8 x 8 tiles for
/// locality.
fn transpose_scalar(
    k: &[f32],
    j0: usize,
    j1: usize,
    c0: usize,
    c1: usize,
    d: usize,
    kt: &mut [f32],
) {
    const T: usize = 8;
    for cb in (c0..c1).step_by(T) {
        let ce = (cb + T).min(c1);
        for jb in (j0..j1).step_by(T) {
            let je = (jb + T).min(j1);
            for c in cb..ce {
                for j in jb..je {
                    kt[c * KEYS + j] = k[j * d + c];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #![allow(unsafe_code)]
    use super::KEYS;
    use std::arch::x86_64::*;

    /// 16 x 16 register transposes of rows `0..keys16` (stride `d`), columns `0..d16`
    /// (multiples of 16).
    ///
    /// # Safety
    /// AVX-512 F available; `k` holds `keys16` rows of stride `d` with `d16` values each,
    /// `kt` `d16` rows of `KEYS`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose16(
        k: &[f32],
        keys16: usize,
        d: usize,
        d16: usize,
        kt: &mut [f32],
    ) {
        unsafe {
            for j0 in (0..keys16).step_by(16) {
                for c0 in (0..d16).step_by(16) {
                    let src = k.as_ptr().add(j0 * d + c0);
                    let r: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(src.add(i * d)));
                    // Within 128-bit lanes: pairs of rows interleaved, then quads.
                    let mut t = [_mm512_setzero_ps(); 16];
                    for i in 0..8 {
                        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
                        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
                    }
                    let mut u = [_mm512_setzero_ps(); 16];
                    for i in 0..4 {
                        let pd = |x: __m512| _mm512_castps_pd(x);
                        let (a, b) = (pd(t[4 * i]), pd(t[4 * i + 2]));
                        let (c, e) = (pd(t[4 * i + 1]), pd(t[4 * i + 3]));
                        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
                        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
                        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, e));
                        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, e));
                    }
                    // u[4q + m], 128-bit lane l: column 4l + m of rows 4q..4q + 4.
                    let dst = kt.as_mut_ptr().add(c0 * KEYS + j0);
                    for m in 0..4 {
                        let v0 = _mm512_shuffle_f32x4::<0x88>(u[m], u[4 + m]);
                        let w0 = _mm512_shuffle_f32x4::<0xDD>(u[m], u[4 + m]);
                        let v1 = _mm512_shuffle_f32x4::<0x88>(u[8 + m], u[12 + m]);
                        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + m], u[12 + m]);
                        let col = |c: usize| dst.add(c * KEYS);
                        _mm512_storeu_ps(col(m), _mm512_shuffle_f32x4::<0x88>(v0, v1));
                        _mm512_storeu_ps(col(8 + m), _mm512_shuffle_f32x4::<0xDD>(v0, v1));
                        _mm512_storeu_ps(col(4 + m), _mm512_shuffle_f32x4::<0x88>(w0, w1));
                        _mm512_storeu_ps(col(12 + m), _mm512_shuffle_f32x4::<0xDD>(w0, w1));
                    }
                }
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

fn scale_add_max_scalar(s: &mut [f32], scale: f32, bias: Option<&[f32]>) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for (j, x) in s.iter_mut().enumerate() {
        *x = *x * scale + bias.map_or(0.0, |b| b[j]);
        m = m.max(*x);
    }
    m
}

fn exp_sub_sum_scalar(x: &mut [f32], m: f32) -> f32 {
    let mut sum = 0.0;
    for e in x {
        *e = (*e - m).exp();
        sum += *e;
    }
    sum
}

/// Raises row `r`'s running max to `block_max`, shrinking its sum and accumulator.
#[inline(always)]
fn raise_max(r: usize, block_max: f32, m: &mut [f32], l: &mut [f32], acc: &mut [f32], d: usize) {
    if m[r] == f32::NEG_INFINITY {
        // Nothing summed yet (sum and accumulator are 0): nothing to shrink.
        m[r] = block_max;
    } else if block_max > m[r] {
        // Earlier weights were relative to a smaller max: shrink them.
        let shrink = (m[r] - block_max).exp();
        l[r] *= shrink;
        for a in &mut acc[r * d..(r + 1) * d] {
            *a *= shrink;
        }
        m[r] = block_max;
    }
}

#[allow(clippy::too_many_arguments)]
pub fn softmax_block_scalar(
    s: &mut [f32],
    rows: usize,
    group: usize,
    bias: Option<&[f32]>,
    scale: f32,
    m: &mut [f32],
    l: &mut [f32],
    acc: &mut [f32],
    d: usize,
) {
    for r in 0..rows {
        let row = &mut s[r * KEYS..(r + 1) * KEYS];
        let b = bias.map(|b| &b[r / group * KEYS..(r / group + 1) * KEYS]);
        let block_max = scale_add_max_scalar(row, scale, b);
        if block_max == f32::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        raise_max(r, block_max, m, l, acc, d);
        l[r] += exp_sub_sum_scalar(row, m[r]);
    }
}

pub fn f16_to_f32_scalar(src: &[half::f16], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

// ---------------------------------------------------------------- SIMD kernels (once)

#[inline(always)]
fn scores_simd<S: Simd>(s: S, q: &[f32], rows: usize, kt: &[f32], d: usize, out: &mut [f32]) {
    // Half the register file as accumulators: 4 rows × 4 vectors of 16 keys (AVX-512, all 64
    // keys in one pass) or 4 rows × 2 vectors of 8 keys (AVX2, four passes).
    // SAFETY: `scores` checked q (rows·d), kt (d·KEYS) and out (rows·KEYS).
    if S::LANES == 16 {
        unsafe { scores_tile::<S, 4>(s, q, rows, kt, d, out) }
    } else {
        unsafe { scores_tile::<S, 2>(s, q, rows, kt, d, out) }
    }
}

/// # Safety
/// `q` holds `rows·d` values, `kt` `d·KEYS`, `out` `rows·KEYS`; `NV·LANES` divides `KEYS`.
#[inline(always)]
unsafe fn scores_tile<S: Simd, const NV: usize>(
    s: S,
    q: &[f32],
    rows: usize,
    kt: &[f32],
    d: usize,
    out: &mut [f32],
) {
    unsafe {
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            for j0 in (0..KEYS).step_by(NV * S::LANES) {
                // Per c: NV key loads, 4 broadcasts, 4·NV FMAs.
                let mut acc = [[s.zero(); NV]; 4];
                for c in 0..d {
                    let kp = kt.as_ptr().add(c * KEYS + j0);
                    let k: [S::V; NV] = std::array::from_fn(|t| s.load_ptr(kp.add(t * S::LANES)));
                    for (i, row) in acc.iter_mut().enumerate() {
                        let qb = s.splat(*qp.add(i * d + c));
                        for (a, kv) in row.iter_mut().zip(&k) {
                            *a = s.fma(qb, *kv, *a);
                        }
                    }
                }
                for (i, row) in acc.iter().enumerate() {
                    let sp = out.as_mut_ptr().add((r + i) * KEYS + j0);
                    for (t, a) in row.iter().enumerate() {
                        s.store_ptr(sp.add(t * S::LANES), *a);
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn scores_rows_simd<S: Simd>(
    s: S,
    q: &[f32],
    rows: usize,
    k: &[f32],
    keys: usize,
    d: usize,
    out: &mut [f32],
) {
    let full = d - d % S::LANES;
    let tail = s.first_lanes(d - full);
    // SAFETY: `scores_rows` checked q (rows·d), k (keys·d) and out (rows·KEYS); whole vectors
    // stay below `full`, the tail reads only its `d - full` lanes.
    unsafe {
        for r in (0..rows).step_by(4) {
            let qp = q.as_ptr().add(r * d);
            for j in 0..keys {
                let kp = k.as_ptr().add(j * d);
                let mut a = [s.zero(); 4];
                for c in (0..full).step_by(S::LANES) {
                    let kv = s.load_ptr(kp.add(c));
                    for (i, acc) in a.iter_mut().enumerate() {
                        *acc = s.fma(s.load_ptr(qp.add(i * d + c)), kv, *acc);
                    }
                }
                if full < d {
                    let kv = s.load_masked(tail, kp.add(full));
                    for (i, acc) in a.iter_mut().enumerate() {
                        *acc = s.fma(s.load_masked(tail, qp.add(i * d + full)), kv, *acc);
                    }
                }
                for (i, acc) in a.iter().enumerate() {
                    *out.as_mut_ptr().add((r + i) * KEYS + j) = s.reduce_sum(*acc);
                }
            }
        }
    }
}

#[inline(always)]
fn accumulate_simd<S: Simd>(
    s: S,
    p: &[f32],
    rows: usize,
    v: &[f32],
    v_stride: usize,
    keys: usize,
    d: usize,
    acc: &mut [f32],
) {
    // All of a row's columns in as few passes over the keys as the registers allow (4 rows ×
    // up to 5 vectors on AVX-512, 4 × 2 on AVX2), the last vector masked when `d` is not a
    // multiple of the lanes. A separate pass for a masked tail of 4 accumulators waits on
    // FMA latency (d = 72: a third of the time for a ninth of the work). Each output keeps
    // one FMA chain over the keys in order, whatever the grouping.
    let max_nv = if S::LANES == 16 { 5 } else { 2 };
    let vectors = d.div_ceil(S::LANES);
    let passes = vectors.div_ceil(max_nv);
    // SAFETY: `accumulate` checked p (rows·KEYS), v (keys rows at v_stride, each >= d) and
    // acc (rows·d); each pass's columns lie inside 0..d (the last vector masked to it).
    unsafe {
        for r in (0..rows).step_by(4) {
            let pp = p.as_ptr().add(r * KEYS);
            let ap = acc.as_mut_ptr().add(r * d);
            let mut v0 = 0;
            for pass in 0..passes {
                let nv = (vectors - v0).div_ceil(passes - pass);
                let c = v0 * S::LANES;
                let last = s.first_lanes((d - c - (nv - 1) * S::LANES).min(S::LANES));
                let masked = c + nv * S::LANES > d;
                macro_rules! cols {
                    ($nv:literal) => {
                        if masked {
                            accumulate_cols::<S, $nv, true>(
                                s, pp, ap, v, v_stride, keys, d, c, last,
                            )
                        } else {
                            accumulate_cols::<S, $nv, false>(
                                s, pp, ap, v, v_stride, keys, d, c, last,
                            )
                        }
                    };
                }
                match nv {
                    1 => cols!(1),
                    2 => cols!(2),
                    3 => cols!(3),
                    4 => cols!(4),
                    _ => cols!(5),
                }
                v0 += nv;
            }
        }
    }
}

/// Columns `c..c + NV·LANES` of 4 accumulator rows at `ap` (row stride `d`) += the weights at
/// `pp` (row stride `KEYS`) times V rows `0..keys`. With `MASKED` only the lanes of `m` of
/// the last vector are read and written.
///
/// # Safety
/// The 4 rows of `ap` and `pp`, and V's `keys` rows, hold the columns touched.
#[inline(always)]
unsafe fn accumulate_cols<S: Simd, const NV: usize, const MASKED: bool>(
    s: S,
    pp: *const f32,
    ap: *mut f32,
    v: &[f32],
    v_stride: usize,
    keys: usize,
    d: usize,
    c: usize,
    m: S::M,
) {
    let load = |at: *const f32, h: usize| {
        // SAFETY: the caller's contract covers the columns touched; the last vector of a
        // masked group reads only the lanes of `m`.
        unsafe {
            if MASKED && h == NV - 1 {
                s.load_masked(m, at)
            } else {
                s.load_ptr(at)
            }
        }
    };
    unsafe {
        let mut a = [[s.zero(); NV]; 4];
        for (i, row) in a.iter_mut().enumerate() {
            for (h, x) in row.iter_mut().enumerate() {
                *x = load(ap.add(i * d + c + h * S::LANES), h);
            }
        }
        // Per key: NV loads, 4 broadcasts, 4·NV FMAs.
        for j in 0..keys {
            let vp = v.as_ptr().add(j * v_stride + c);
            let vv: [S::V; NV] = std::array::from_fn(|h| load(vp.add(h * S::LANES), h));
            for (i, row) in a.iter_mut().enumerate() {
                let w = s.splat(*pp.add(i * KEYS + j));
                for (x, vh) in row.iter_mut().zip(&vv) {
                    *x = s.fma(w, *vh, *x);
                }
            }
        }
        for (i, row) in a.iter().enumerate() {
            for (h, x) in row.iter().enumerate() {
                let at = ap.add(i * d + c + h * S::LANES);
                if MASKED && h == NV - 1 {
                    s.store_masked(m, at, *x);
                } else {
                    s.store_ptr(at, *x);
                }
            }
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn softmax_block_simd<S: Simd>(
    s: S,
    sc: &mut [f32],
    rows: usize,
    group: usize,
    bias: Option<&[f32]>,
    scale: f32,
    m: &mut [f32],
    l: &mut [f32],
    acc: &mut [f32],
    d: usize,
) {
    // A score row stays in registers: 4 vectors on AVX-512, 8 on AVX2.
    const MAX_V: usize = KEYS / 8;
    let nv = KEYS / S::LANES;
    let scv = s.splat(scale);
    for r in 0..rows {
        let row = &mut sc[r * KEYS..(r + 1) * KEYS];
        let b = bias.map(|b| &b[r / group * KEYS..(r / group + 1) * KEYS]);
        let mut x = [s.zero(); MAX_V];
        let mut mx = s.splat(f32::NEG_INFINITY);
        for (t, xt) in x.iter_mut().enumerate().take(nv) {
            let at = t * S::LANES;
            // x · scale + 0 rounds as x · scale does.
            *xt = match b {
                Some(b) => s.fma(s.load(&row[at..]), scv, s.load(&b[at..])),
                None => s.mul(s.load(&row[at..]), scv),
            };
            mx = s.max(mx, *xt);
        }
        let block_max = s.reduce_max(mx);
        if block_max == f32::NEG_INFINITY {
            row.fill(0.0);
            continue;
        }
        raise_max(r, block_max, m, l, acc, d);
        let mv = s.splat(m[r]);
        let mut sum = s.zero();
        for (t, xt) in x.iter().enumerate().take(nv) {
            // exp underflows (incl. -inf, masked keys) to exactly 0.
            let e = math::exp_with::<math::Minimax5, _>(s, s.sub(*xt, mv));
            s.store(&mut row[t * S::LANES..], e);
            sum = s.add(sum, e);
        }
        l[r] += s.reduce_sum(sum);
    }
}

#[inline(always)]
fn f16_to_f32_simd<S: Simd>(s: S, src: &[half::f16], dst: &mut [f32]) {
    use half::slice::HalfFloatSliceExt;
    let full = src.len() - src.len() % S::LANES;
    let bits: &[u16] = src[..full].reinterpret_cast();
    for (h, d) in bits
        .chunks_exact(S::LANES)
        .zip(dst.chunks_exact_mut(S::LANES))
    {
        s.store(d, s.load_f16(h));
    }
    f16_to_f32_scalar(&src[full..], &mut dst[full..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::test_levels;

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
    fn key_transpose_is_exact_on_every_level() {
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
            for (keys, d) in [
                (64, 256),
                (64, 64),
                (13, 33),
                (48, 16),
                (64, 72),
                (1, 1),
                (17, 15),
            ] {
                let k = data(keys * d, 9);
                let mut kt = vec![f32::NAN; d * KEYS];
                transpose_keys(isa, &k, keys, d, &mut kt);
                for c in 0..d {
                    for j in 0..KEYS {
                        let got = kt[c * KEYS + j];
                        if j < keys {
                            assert_eq!(got.to_bits(), k[j * d + c].to_bits(), "{isa:?} {keys}x{d}");
                        } else {
                            assert!(got.is_nan(), "{isa:?}: wrote past the keys");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_isa_matches_scalar_with_tails() {
        for isa in test_levels(&[Isa::Avx512, Isa::Avx2], "attention micro-kernels") {
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
            for (rows, group) in [(1, 1), (6, 2), (9, 3)] {
                let mut sc: Vec<f32> = data(rows * KEYS, 11).iter().map(|v| v * 40.0).collect();
                let mut bias = vec![0.0; rows.div_ceil(group) * KEYS];
                bias[3] = f32::NEG_INFINITY;
                if rows > 1 {
                    // The second bias row masks everything.
                    bias[KEYS..2 * KEYS].fill(f32::NEG_INFINITY);
                }
                let m0: Vec<f32> = (0..rows)
                    .map(|r| [f32::NEG_INFINITY, 3.0, 50.0][r % 3])
                    .collect();
                let l0 = vec![1.5; rows];
                let d = 19;
                let acc0 = data(rows * d, 12);
                let (mut m, mut l, mut acc) = (m0.clone(), l0.clone(), acc0.clone());
                let (mut wm, mut wl, mut wacc) = (m0, l0, acc0);
                let mut want = sc.clone();
                // Without a bias, the same as a bias of zeros.
                let zeros = vec![0.0; bias.len()];
                let run = |b: Option<&[f32]>| {
                    let (mut s, mut m, mut l, mut a) =
                        (sc.clone(), m.clone(), l.clone(), acc.clone());
                    softmax_block(isa, &mut s, rows, group, b, 0.7, &mut m, &mut l, &mut a, d);
                    (s, m, l, a)
                };
                assert_eq!(run(None), run(Some(&zeros)), "{isa:?} no bias");

                softmax_block_scalar(
                    &mut want,
                    rows,
                    group,
                    Some(&bias),
                    0.7,
                    &mut wm,
                    &mut wl,
                    &mut wacc,
                    d,
                );
                softmax_block(
                    isa,
                    &mut sc,
                    rows,
                    group,
                    Some(&bias),
                    0.7,
                    &mut m,
                    &mut l,
                    &mut acc,
                    d,
                );
                assert_eq!(m, wm, "{isa:?} softmax_block max");
                assert!(max_rel(&l, &wl) < 1e-6, "{isa:?} softmax_block sum");
                assert!(max_rel(&acc, &wacc) < 1e-6, "{isa:?} softmax_block acc");
                for (g, w) in sc.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 2e-7 * w.abs() + 1e-37,
                        "{isa:?} softmax_block exp {g} vs {w}"
                    );
                }
                assert_eq!(sc[3], 0.0, "{isa:?}: a masked key keeps weight 0");
            }
        }
    }
}
