//! Attention's `P·V` with bf16 operands (the encoders' opt-in bf16 mode): the softmax
//! weights and values as bf16 pairs along the keys, `vdpbf16ps` into f32 sums. Its twin in
//! f32 is `simd::accumulate`.
#![allow(unsafe_code)]

use super::simd::KEYS;
use crate::cpu::gemm_bf16::available;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// [`super::simd::accumulate`] with bf16 operands: `acc[r] += Σ_{i < pairs} p[r][i] · v[i]` where
/// `p[r * KEYS / 2 + i]` holds the weights of keys `2i`, `2i + 1` and `v[i * d + c]` their
/// values in column `c`, each a bf16 pair (`vdpbf16ps`; f32 sums). Panics without
/// AVX512-BF16.
pub fn accumulate_bf16(p: &[u32], rows: usize, v: &[u32], pairs: usize, d: usize, acc: &mut [f32]) {
    assert!(
        rows.is_multiple_of(4) && pairs <= KEYS / 2,
        "accumulate_bf16: rows {rows}, pairs {pairs}"
    );
    assert!(p.len() >= rows * KEYS / 2 && v.len() >= pairs * d && acc.len() >= rows * d);
    assert!(available(), "accumulate_bf16 without AVX512-BF16");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: features checked; lengths checked above.
    unsafe {
        accumulate_bf16_avx512(p, rows, v, pairs, d, acc)
    };
}

/// Scalar twin of [`accumulate_bf16`] (f32 sums of the exact bf16 products).
pub fn accumulate_bf16_scalar(
    p: &[u32],
    rows: usize,
    v: &[u32],
    pairs: usize,
    d: usize,
    acc: &mut [f32],
) {
    let lo = |x: u32| f32::from_bits(x << 16);
    let hi = |x: u32| f32::from_bits(x & 0xffff_0000);
    for r in 0..rows {
        for i in 0..pairs {
            let w = p[r * KEYS / 2 + i];
            for c in 0..d {
                let x = v[i * d + c];
                acc[r * d + c] += lo(w) * lo(x) + hi(w) * hi(x);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
/// See [`accumulate_bf16`]: 4 rows x 32 columns (8 accumulators) per pass, the
/// last columns masked.
///
/// # Safety
/// AVX512-F/BW/BF16 available; lengths as [`accumulate_bf16`] checks them.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn accumulate_bf16_avx512(
    p: &[u32],
    rows: usize,
    v: &[u32],
    pairs: usize,
    d: usize,
    acc: &mut [f32],
) {
    unsafe {
        for r in (0..rows).step_by(4) {
            let pp = p.as_ptr().add(r * KEYS / 2);
            let ap = acc.as_mut_ptr().add(r * d);
            for c in (0..d).step_by(32) {
                let w = (d - c).min(32);
                let m0: __mmask16 = if w >= 16 { 0xffff } else { (1u16 << w) - 1 };
                let m1: __mmask16 = if w >= 32 {
                    0xffff
                } else if w > 16 {
                    (1u16 << (w - 16)) - 1
                } else {
                    0
                };
                let mut a = [[_mm512_setzero_ps(); 2]; 4];
                for (i, row) in a.iter_mut().enumerate() {
                    row[0] = _mm512_maskz_loadu_ps(m0, ap.add(i * d + c));
                    row[1] = _mm512_maskz_loadu_ps(m1, ap.add(i * d + c + 16));
                }
                for j in 0..pairs {
                    let vp = v.as_ptr().add(j * d + c);
                    let b0: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi32(m0, vp.cast()));
                    let b1: __m512bh =
                        std::mem::transmute(_mm512_maskz_loadu_epi32(m1, vp.add(16).cast()));
                    for (i, row) in a.iter_mut().enumerate() {
                        let w: __m512bh = std::mem::transmute(_mm512_set1_epi32(
                            *pp.add(i * KEYS / 2 + j) as i32,
                        ));
                        row[0] = _mm512_dpbf16_ps(row[0], w, b0);
                        row[1] = _mm512_dpbf16_ps(row[1], w, b1);
                    }
                }
                for (i, row) in a.iter().enumerate() {
                    _mm512_mask_storeu_ps(ap.add(i * d + c), m0, row[0]);
                    _mm512_mask_storeu_ps(ap.add(i * d + c + 16), m1, row[1]);
                }
            }
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
    fn bf16_accumulate_matches_scalar() {
        if !available() {
            eprintln!("SKIPPED: no AVX512-BF16 on this CPU");
            return;
        }
        let bf = |x: f32| half::bf16::from_f32(x).to_bits() as u32;
        for (d, pairs) in [(72, 32), (64, 7), (80, 1), (5, 3), (33, 32)] {
            let rows = 8;
            let pw = data(rows * KEYS, 1);
            let vw = data(2 * pairs * d, 2);
            let p: Vec<u32> = (0..rows * KEYS / 2)
                .map(|i| bf(pw[2 * i]) | bf(pw[2 * i + 1]) << 16)
                .collect();
            let v: Vec<u32> = (0..pairs * d)
                .map(|i| bf(vw[2 * i]) | bf(vw[2 * i + 1]) << 16)
                .collect();
            let mut acc = data(rows * d, 3);
            let mut want = acc.clone();
            accumulate_bf16(&p, rows, &v, pairs, d, &mut acc);
            accumulate_bf16_scalar(&p, rows, &v, pairs, d, &mut want);
            assert!(max_rel(&acc, &want) < 1e-5, "d={d} pairs={pairs}");
        }
    }
}
