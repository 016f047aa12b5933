//! The blocked GEMM of [`super::gemm`] with AVX512-BF16 dot products, for the encoders'
//! f16 / bf16 weights on CPUs where `vdpbf16ps` (two multiply-adds per f32 lane) retires as
//! fast as an f32 FMA: twice the arithmetic per instruction.
//!
//! Same plan, blocks and output handling as the f32 GEMM; the data are pairs: x and w are
//! rounded to bf16 (nearest even) and packed as `u32` holding the values of `k` indices
//! `2p` and `2p + 1` (an odd `k` is padded with a zero), so one `vdpbf16ps` adds both
//! products of a pair to an f32 accumulator. Sums stay f32.
//!
//! Precision: bf16 keeps 8 significant bits (f16 11, f32 24), so this path is opt-in
//! ([`super::EncoderPrecision::Bf16`]); the golden tests run both paths.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::gemm::{Block, BlockOut, OutPtr, plan, sized};
use super::matmul_float::WeightElem;

/// Register tile: 12 rows x 32 columns (24 accumulators), as the f32 AVX-512 kernel.
const MR: usize = 12;
const NR: usize = 32;
/// `k` pairs per cache block: a weight micro-panel (`KCP x NR` pairs, 32 KiB) stays in L1.
const KCP: usize = 256;
/// x rows per cache block (a multiple of `MR`).
const MC_ROWS: usize = 192;

/// True when this CPU can run [`gemm_bf16`].
pub(super) fn available() -> bool {
    let f = super::features();
    f.avx512f && f.avx512bw && f.avx512bf16
}

/// `out[n, m] = x[n, k] · w[m, k]ᵀ` with both operands rounded to bf16. Panics unless
/// [`available`].
pub(super) fn gemm_bf16<T: WeightElem>(
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
) {
    assert!(available(), "gemm_bf16 without AVX512-BF16");
    assert!(w.len() >= m * k && x.len() >= n * k && out.len() >= n * m);
    let kp = k.div_ceil(2);
    let xpack = pack_x(x, n, k, kp);
    let blocks = plan(n, m, k, MR, NR);
    let dst = OutPtr(out.as_mut_ptr());
    let out_len = out.len();
    blocks.into_par_iter().for_each(|b| {
        assert!(b.i0 + b.rows <= n && b.j0 + b.cols <= m && n * m <= out_len);
        // SAFETY: the plan's blocks are disjoint rectangles of `out` (checked in range
        // above), so no two tasks write the same element and nothing reads `out` meanwhile.
        let sink = unsafe { BlockOut::new(dst, m, b, None) };
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            // SAFETY: `available()` was asserted above.
            unsafe { block_tiles(w, &xpack, k, kp, b, sink, scratch) }
        })
    });
}

/// x as panels of `MR` rows, each `[kp][MR]` of bf16 pairs (rows past `n` are zero).
fn pack_x(x: &[f32], n: usize, k: usize, kp: usize) -> Vec<u32> {
    let panels = n.div_ceil(MR);
    let mut xpack = vec![0u32; panels * MR * kp];
    let fill = |(q, dst): (usize, &mut [u32])| {
        let mut pairs = vec![0u32; kp];
        for r in 0..MR.min(n - q * MR) {
            let row = &x[(q * MR + r) * k..(q * MR + r + 1) * k];
            // SAFETY: `gemm_bf16` asserted `available()` before packing.
            unsafe { to_pairs(row, &mut pairs) };
            for (p, &v) in pairs.iter().enumerate() {
                dst[p * MR + r] = v;
            }
        }
    };
    if n * k < 1 << 16 {
        xpack.chunks_mut(MR * kp).enumerate().for_each(fill);
    } else {
        xpack.par_chunks_mut(MR * kp).enumerate().for_each(fill);
    }
    xpack
}

use std::arch::x86_64::*;

/// [`to_pairs`] behind a check: panics unless [`available`].
pub(super) fn to_bf16_pairs(src: &[f32], pairs: &mut [u32]) {
    assert!(available(), "bf16 pairs without AVX512-BF16");
    // SAFETY: the features were just checked.
    unsafe { to_pairs(src, pairs) }
}

/// `pairs[p] = bf16(src[2p]) | bf16(src[2p + 1]) << 16` (nearest even; a missing last value
/// is zero). `pairs.len() == src.len().div_ceil(2)`.
///
/// # Safety
/// AVX512-F/BW/BF16 available.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn to_pairs(src: &[f32], pairs: &mut [u32]) {
    assert_eq!(pairs.len(), src.len().div_ceil(2));
    let full = src.len() / 32 * 32;
    for c in (0..full).step_by(32) {
        // SAFETY: c + 32 <= full <= src.len(); 16 pairs from c / 2 fit in pairs.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr().add(c));
            let hi = _mm512_loadu_ps(src.as_ptr().add(c + 16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(pairs.as_mut_ptr().add(c / 2).cast(), v);
        }
    }
    if full < src.len() {
        let mut buf = [0f32; 32];
        buf[..src.len() - full].copy_from_slice(&src[full..]);
        let mut tail = [0u32; 16];
        // SAFETY: buf holds 32 floats, tail 16 pairs.
        unsafe {
            let lo = _mm512_loadu_ps(buf.as_ptr());
            let hi = _mm512_loadu_ps(buf.as_ptr().add(16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(tail.as_mut_ptr().cast(), v);
        }
        let n = pairs.len() - full / 2;
        pairs[full / 2..].copy_from_slice(&tail[..n]);
    }
}

/// A task's packed weight pairs, partial-sum tiles, and row staging.
type Scratch = (Vec<u32>, Vec<f32>, Vec<f32>, Vec<u32>);

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new(), Vec::new())) };
}

/// One task, as `gemm::block_tiles`: weight rows packed once (`[panel][kp][NR]` pairs),
/// then blocks of `MC_ROWS` x rows by `KCP` pairs; the last pair block stores full tiles
/// straight into `out`, edge tiles through the buffer.
///
/// # Safety
/// AVX512-F/BW/BF16 available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c,avx512bf16")]
unsafe fn block_tiles<T: WeightElem>(
    w: &[T],
    xpack: &[u32],
    k: usize,
    kp: usize,
    b: Block,
    mut sink: BlockOut,
    scratch: &mut Scratch,
) {
    let (wbuf, cbuf, row_f32, row_pairs) = scratch;
    let col_panels = b.cols.div_ceil(NR);
    let ldc = col_panels * NR;
    let first_panel = b.i0 / MR;
    let row_panels = b.rows.div_ceil(MR);
    sink.full_rows = b.rows / MR * MR;
    let wpack = sized(wbuf, col_panels * NR * kp);
    let row_f32 = sized(row_f32, k);
    let row_pairs = sized(row_pairs, kp);
    // SAFETY (Avx512 token): the features are enabled on this function.
    let s = unsafe { super::simd::Avx512::new_unchecked() };
    for (jp, panel) in wpack.chunks_exact_mut(NR * kp).enumerate() {
        for r in 0..NR {
            let j = b.j0 + jp * NR + r;
            if j >= b.j0 + b.cols {
                for p in 0..kp {
                    panel[p * NR + r] = 0;
                }
                continue;
            }
            widen_row(s, &w[j * k..(j + 1) * k], row_f32);
            // SAFETY: features enabled here.
            unsafe { to_pairs(row_f32, row_pairs) };
            for (p, &v) in row_pairs.iter().enumerate() {
                panel[p * NR + r] = v;
            }
        }
    }
    let mc_panels = MC_ROWS / MR;
    let c = sized(cbuf, mc_panels * MR * ldc);
    for ic in (0..row_panels).step_by(mc_panels) {
        let ic_end = (ic + mc_panels).min(row_panels);
        let mut edge_tiles = false;
        for p0 in (0..kp).step_by(KCP) {
            let kc = KCP.min(kp - p0);
            let last = p0 + kc == kp;
            for jp in 0..col_panels {
                let wp = &wpack[jp * NR * kp + p0 * NR..jp * NR * kp + (p0 + kc) * NR];
                let full_cols = (jp + 1) * NR <= b.cols;
                for ip in ic..ic_end {
                    let q = first_panel + ip;
                    let xp = &xpack[q * MR * kp + p0 * MR..q * MR * kp + (p0 + kc) * MR];
                    let ct = &mut c[(ip - ic) * MR * ldc + jp * NR..];
                    assert!(ct.len() >= (MR - 1) * ldc + NR);
                    let row0 = ip * MR;
                    let direct = last && full_cols && row0 + MR <= b.rows;
                    edge_tiles |= last && !direct;
                    let (dst, ldd) = if direct {
                        (sink.tile_ptr(row0, jp * NR, MR, NR), sink.m)
                    } else {
                        (ct.as_mut_ptr(), ldc)
                    };
                    // SAFETY: xp holds kc*MR pairs, wp kc*NR (sliced above); ct covers MR
                    // rows of NR at stride ldc (asserted); a direct tile lies inside this
                    // task's rectangle of `out` (`tile_ptr` checks it).
                    unsafe {
                        micro_kernel(
                            kc,
                            xp.as_ptr(),
                            wp.as_ptr(),
                            (p0 > 0).then_some(ct.as_ptr()),
                            ldc,
                            dst,
                            ldd,
                        )
                    };
                }
            }
        }
        if edge_tiles {
            sink.write_edges(ic * MR, (ic_end - ic) * MR, c, ldc, NR);
        }
    }
}

/// One weight row widened to f32.
#[inline(always)]
fn widen_row<S: super::simd::Simd, T: WeightElem>(s: S, src: &[T], dst: &mut [f32]) {
    let l = S::LANES;
    let full = src.len() - src.len() % l;
    for p in (0..full).step_by(l) {
        s.store(&mut dst[p..], T::load(s, &src[p..]));
    }
    for p in full..src.len() {
        dst[p] = src[p].to_f32();
    }
}

/// `dst[r][0..NR] = acc[r][0..NR] + Σ_p xp[p][r] · wp[p][0..NR]` over `kc` bf16 pairs.
///
/// # Safety
/// AVX512-F/BF16 available; `xp` readable for `kc * MR`, `wp` for `kc * NR` pairs;
/// `partial` readable for `MR` rows of `NR` floats at stride `lda`; `dst` writable likewise
/// at stride `ldd`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn micro_kernel(
    kc: usize,
    xp: *const u32,
    wp: *const u32,
    partial: Option<*const f32>,
    lda: usize,
    dst: *mut f32,
    ldd: usize,
) {
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        if let Some(c) = partial {
            for (r, row) in acc.iter_mut().enumerate() {
                row[0] = _mm512_loadu_ps(c.add(r * lda));
                row[1] = _mm512_loadu_ps(c.add(r * lda + 16));
            }
        }
        for p in 0..kc {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(p * NR + 16).cast()));
            let a = xp.add(p * MR);
            for (r, row) in acc.iter_mut().enumerate() {
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
        for (r, row) in acc.iter().enumerate() {
            _mm512_storeu_ps(dst.add(r * ldd), row[0]);
            _mm512_storeu_ps(dst.add(r * ldd + 16), row[1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scalar twin: the same bf16 roundings, f64 sums (the kernel's f32 order differs).
    fn reference(w: &[half::f16], x: &[f32], n: usize, k: usize, m: usize) -> Vec<f32> {
        let bf = |v: f32| half::bf16::from_f32(v).to_f32() as f64;
        let mut out = vec![0f32; n * m];
        for i in 0..n {
            for j in 0..m {
                let s: f64 = (0..k)
                    .map(|p| bf(x[i * k + p]) * bf(w[j * k + p].to_f32()))
                    .sum();
                out[i * m + j] = s as f32;
            }
        }
        out
    }

    fn check(n: usize, k: usize, m: usize, seed: u32) {
        let mut r = seed | 1;
        let mut next = || {
            r = r.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (r >> 8) as f32 / (1 << 24) as f32 * 8.0 - 4.0
        };
        let x: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let w: Vec<half::f16> = (0..m * k).map(|_| half::f16::from_f32(next())).collect();
        let mut out = vec![f32::NAN; n * m];
        gemm_bf16(&w, &x, n, k, m, &mut out);
        let want = reference(&w, &x, n, k, m);
        // f32 sums of k products of magnitude <= 16, in another order than the f64 reference.
        let tol = 1e-6 * 16.0 * k as f32 + 1e-6;
        for (i, (g, r)) in out.iter().zip(&want).enumerate() {
            assert!((g - r).abs() <= tol, "{n}x{k}x{m} [{i}]: {g} vs {r}");
        }
    }

    #[test]
    fn threaded_and_blocked_shapes_match_the_reference() {
        if !available() {
            eprintln!("SKIPPED: no AVX512-BF16 on this CPU");
            return;
        }
        // Several k blocks (k > 2 * KCP), several row blocks and column panels, edges.
        for (n, k, m, seed) in [(200, 1100, 70, 1), (13, 7, 33, 2), (400, 64, 300, 3)] {
            check(n, k, m, seed);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        #[test]
        fn matches_the_scalar_bf16_reference(n in 1usize..40, k in 1usize..90, m in 1usize..70, seed in any::<u32>()) {
            if available() {
                check(n, k, m, seed);
            }
        }
    }
}
