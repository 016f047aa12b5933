//! AVX-512 VNNI dot products of Q4_K and Q6_K weight rows, 8 rows at a time, for few
//! activation columns (a decode step), in the GEMM's f32 order.
//!
//! The row kernels (`x86`) unpack one row's super-block in 256-bit pieces and reduce its
//! integer sum to a scalar per super-block: at decode sizes they ran at 40–48 GB/s from the
//! caches, too close to the memory's rate to hide behind it. Here each row's super-block is
//! unpacked in 512-bit pieces, the sub-block scales are spread over i16 lanes with one
//! `vpermw` each and applied by `vpdpwssd` (no per-sub-block reduction), and the 8 rows'
//! integer sums are reduced together into "lane = row" order, where one f32 FMA per
//! super-block folds all 8 rows in.
//!
//! Batch invariance (see `matmul`): per super-block, in order, `f = fma(isum, d_w * d_x, f)`
//! and, for Q4_K's mins, `f = fma(-msum, dmin_w * d_x, f)`, on exact integer sums: the same
//! bits as the row kernels and the GEMM lanes.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::gemv::{GROUP_ROWS, PREFETCH_BYTES, f16_lanes, prefetch_ahead, reduce_rows};
use super::pack::GemmActs;
use super::x86::{has_avx512_vnni, k4_scales_mins, load128, load256};
use crate::DType;

/// Bytes of a Q8_K activation block and the offset of its levels.
const Q8K_BYTES: usize = 292;
const Q8K_QS: usize = 4;
/// Values per super-block.
const QK_K: usize = 256;

/// The formats this module has kernels for.
pub(super) fn supports(weight: DType) -> bool {
    matches!(weight, DType::Q4K | DType::Q6K)
}

/// Dot products of `rows` consecutive weight rows (`w`: their bytes, `row_bytes` each, at most
/// [`GROUP_ROWS`]) with activation rows `cols` of `acts` (Q8_K blocks with their sub-block
/// sums, `pack::gemm_acts`): `out[i * GROUP_ROWS + r]` = row r against `cols.start + i`.
/// Returns false (doing nothing) for other types, mismatched sizes or without AVX-512 VNNI.
pub(super) fn dot_group(
    weight: DType,
    w: &[u8],
    row_bytes: usize,
    acts: &GemmActs,
    cols: std::ops::Range<usize>,
    out: &mut [f32],
) -> bool {
    // Sub-block sums per super-block in the activation tables (i16 pairs per i32).
    let sums_per_block = match weight {
        DType::Q4K => 4,
        DType::Q6K => 8,
        _ => return false,
    };
    let blocks = acts.k / QK_K;
    let rows = w.len().checked_div(row_bytes).unwrap_or(0);
    let fits = has_avx512_vnni()
        && (1..=GROUP_ROWS).contains(&rows)
        && w.len() == rows * row_bytes
        && row_bytes == blocks * weight.type_size()
        && cols.end <= acts.n
        && out.len() >= cols.len() * GROUP_ROWS
        && acts.block_bytes == Q8K_BYTES
        && acts.qs_at == Q8K_QS
        && acts.d.len() == acts.n * blocks
        && acts.sums.len() == acts.n * blocks * sums_per_block
        && acts.blocks.len() == acts.n * blocks * Q8K_BYTES;
    if !fits {
        return false;
    }
    let rows = Rows::new(w, row_bytes, rows, weight.type_size(), blocks);
    let mut c = cols.start;
    let mut o = out;
    while c < cols.end {
        // Two columns per pass share the unpacked rows; 8 rows x 2 columns of 512-bit
        // accumulators is what the registers hold.
        let step = (cols.end - c).min(2);
        // SAFETY: features and all lengths checked above.
        unsafe {
            match (weight, step) {
                (DType::Q4K, 2) => q4k::<2>(&rows, acts, c, o),
                (DType::Q4K, _) => q4k::<1>(&rows, acts, c, o),
                (_, 2) => q6k::<2>(&rows, acts, c, o),
                _ => q6k::<1>(&rows, acts, c, o),
            }
        }
        c += step;
        o = &mut o[step * GROUP_ROWS..];
    }
    true
}

/// The 8 rows' pointers and the prefetch of the rows ahead.
struct Rows {
    /// Row r's first byte (missing rows of a last, partial group repeat the last row; their
    /// lanes are dropped).
    p: [*const u8; GROUP_ROWS],
    /// Bytes per super-block.
    size: usize,
    blocks: usize,
    ahead: *const u8,
    row_bytes: usize,
    /// Super-blocks ahead each row is prefetched, for groups above [`ROW_WISE_ABOVE`]; 0
    /// for the linear prefetch of the next group.
    steps: usize,
}

/// Groups of 8 rows larger than this prefetch each row a few super-blocks ahead instead of
/// the whole next group: a group of long rows (Qwen2.5 0.5B's ffn_down, 8 × 4 KB) and the one
/// after it no longer fit in L1 together. Row-wise, ~6 KiB ahead: such a matrix streamed from
/// memory 20–39% faster on a 32 KiB-L1 AMD EPYC, the whole Qwen decode 3–4% (interleaved per
/// token); for groups of 13 KB (Gemma 3 270M's ffn_down) the two ways measured within ±3%.
const ROW_WISE_ABOVE: usize = 16 * 1024;

impl Rows {
    fn new(w: &[u8], row_bytes: usize, rows: usize, size: usize, blocks: usize) -> Self {
        let row_at = |r: usize| r.min(rows - 1) * row_bytes;
        Self {
            p: std::array::from_fn(|r| w[row_at(r)..].as_ptr()),
            size,
            blocks,
            // As in `gemv`: the rows PREFETCH_BYTES on, at the pace these are read; a prefetch
            // past the matrix is harmless (never dereferenced, cannot fault).
            ahead: w
                .as_ptr()
                .wrapping_add((GROUP_ROWS * row_bytes).max(PREFETCH_BYTES)),
            row_bytes,
            steps: if GROUP_ROWS * row_bytes > ROW_WISE_ABOVE {
                PREFETCH_BYTES.div_ceil(GROUP_ROWS * size)
            } else {
                0
            },
        }
    }

    #[inline(always)]
    fn prefetch(&self, b: usize) {
        if self.steps == 0 {
            prefetch_ahead(self.ahead, b, GROUP_ROWS * self.size);
            return;
        }
        // Super-block b + steps of each row: in this group, or at its start in the next one
        // (8 rows on; past the matrix, a prefetch is harmless: never dereferenced).
        let t = b + self.steps;
        let at = if t < self.blocks {
            t * self.size
        } else {
            GROUP_ROWS * self.row_bytes + (t - self.blocks) * self.size
        };
        for p in self.p {
            let first = p.wrapping_add(at);
            prefetch_ahead(first, 0, self.size);
            // The super-block's last line, when it starts late in its first one.
            // SAFETY: a prefetch of any address is harmless.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(first.wrapping_add(self.size - 1).cast()) };
        }
    }

    /// The 8 rows' f16 at byte `at` of each row's super-block `b`, as 16-bit lanes 0..8.
    #[inline(always)]
    unsafe fn f16s(&self, b: usize, at: usize) -> __m128i {
        unsafe { f16_lanes(&self.p, b * self.size + at) }
    }
}

/// `acc[r]`: row r's 16 partial i32 sums; returns the 8 row totals in row order.
#[inline(always)]
unsafe fn reduce_16(acc: &[__m512i; GROUP_ROWS]) -> __m256i {
    unsafe {
        // Rows i and i + 4 side by side, each folded to 8 lanes, as `reduce_rows` wants.
        let v = std::array::from_fn(|i| {
            _mm512_add_epi32(
                _mm512_shuffle_i64x2::<0b01_00_01_00>(acc[i], acc[i + 4]),
                _mm512_shuffle_i64x2::<0b11_10_11_10>(acc[i], acc[i + 4]),
            )
        });
        reduce_rows(v)
    }
}

/// `m[r]`: row r's 4 partial i32 sums; returns the 8 row totals in row order.
#[inline(always)]
unsafe fn reduce_4(m: &[__m128i; GROUP_ROWS]) -> __m256i {
    unsafe {
        let h = |a: usize| _mm_hadd_epi32(m[a], m[a + 1]);
        let lo = _mm_hadd_epi32(h(0), h(2));
        let hi = _mm_hadd_epi32(h(4), h(6));
        _mm256_set_m128i(hi, lo)
    }
}

/// i16 lane L of result j = word `table[j][L / 16]` (two words per 512-bit vector).
const fn halves(table: [[u16; 2]; 4]) -> [[u16; 32]; 4] {
    let mut out = [[0u16; 32]; 4];
    let mut j = 0;
    while j < 4 {
        let mut l = 0;
        while l < 32 {
            out[j][l] = table[j][l / 16];
            l += 1;
        }
        j += 1;
    }
    out
}

/// Q4_K: the 64 bytes of levels at 16 and 80 hold sub-blocks (0, 2 | 1, 3) and (4, 6 | 5, 7)
/// as (low | high) nibbles: the scale word of i16 lane L of each unpacked vector.
static Q4K_SCALE_IDX: [[u16; 32]; 4] = halves([[0, 2], [1, 3], [4, 6], [5, 7]]);

/// Q6_K: vector j holds values 64j..64j+64, sub-blocks of 16 values = 8 i16 lanes.
static Q6K_SCALE_IDX: [[u16; 32]; 4] = {
    let mut out = [[0u16; 32]; 4];
    let mut j = 0;
    while j < 4 {
        let mut l = 0;
        while l < 32 {
            out[j][l] = (4 * j + l / 8) as u16;
            l += 1;
        }
        j += 1;
    }
    out
};

#[inline(always)]
unsafe fn load512(p: *const u8) -> __m512i {
    unsafe { _mm512_loadu_si512(p.cast()) }
}

/// Q4_K super-block (144 bytes): d, dmin (f16), 12 bytes of scales and mins, 128 of nibbles.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4k<const C: usize>(rows: &Rows, a: &GemmActs, c0: usize, out: &mut [f32]) {
    unsafe {
        let nib = _mm512_set1_epi8(0x0F);
        let idx: [__m512i; 4] = std::array::from_fn(|j| load512(Q4K_SCALE_IDX[j].as_ptr().cast()));
        let mut f = [_mm256_setzero_ps(); C];
        for b in 0..rows.blocks {
            rows.prefetch(b);
            // Per column: the levels in the unpacked vectors' order, the sub-block sums.
            let mut x = [[_mm512_setzero_si512(); 4]; C];
            let mut xsum = [_mm_setzero_si128(); C];
            for c in 0..C {
                let blk = (c0 + c) * rows.blocks + b;
                let q = a.blocks.as_ptr().add(blk * Q8K_BYTES + Q8K_QS);
                let (q0, q1) = (load512(q), load512(q.add(64)));
                let (q2, q3) = (load512(q.add(128)), load512(q.add(192)));
                x[c] = [
                    _mm512_shuffle_i64x2::<0b01_00_01_00>(q0, q1),
                    _mm512_shuffle_i64x2::<0b11_10_11_10>(q0, q1),
                    _mm512_shuffle_i64x2::<0b01_00_01_00>(q2, q3),
                    _mm512_shuffle_i64x2::<0b11_10_11_10>(q2, q3),
                ];
                xsum[c] = load128(a.sums.as_ptr().add(blk * 4).cast());
            }
            let mut acc = [[_mm512_setzero_si512(); GROUP_ROWS]; C];
            let mut macc = [[_mm_setzero_si128(); GROUP_ROWS]; C];
            for r in 0..GROUP_ROWS {
                let w = rows.p[r].add(b * rows.size);
                let (sc, mins) = k4_scales_mins(w.add(4));
                let sc = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                let mins = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(mins as i64));
                let (z0, z1) = (load512(w.add(16)), load512(w.add(80)));
                let levels = [
                    _mm512_and_si512(z0, nib),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(z0), nib),
                    _mm512_and_si512(z1, nib),
                    _mm512_and_si512(_mm512_srli_epi16::<4>(z1), nib),
                ];
                let scales: [__m512i; 4] =
                    std::array::from_fn(|j| _mm512_permutexvar_epi16(idx[j], sc));
                for c in 0..C {
                    let mut v = _mm512_setzero_si512();
                    for j in 0..4 {
                        let p = _mm512_maddubs_epi16(levels[j], x[c][j]);
                        v = _mm512_dpwssd_epi32(v, p, scales[j]);
                    }
                    acc[c][r] = v;
                    macc[c][r] = _mm_madd_epi16(mins, xsum[c]);
                }
            }
            // The 8 rows' d and dmin.
            let dw = _mm256_cvtph_ps(rows.f16s(b, 0));
            let dmin = _mm256_cvtph_ps(rows.f16s(b, 2));
            for c in 0..C {
                let dx = _mm256_set1_ps(*a.d.get_unchecked((c0 + c) * rows.blocks + b));
                let isum = reduce_16(&acc[c]);
                let msum = reduce_4(&macc[c]);
                f[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), f[c]);
                let neg = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_setzero_si256(), msum));
                f[c] = _mm256_fmadd_ps(neg, _mm256_mul_ps(dmin, dx), f[c]);
            }
        }
        for (c, f) in f.into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c * GROUP_ROWS), f);
        }
    }
}

/// Q6_K super-block (210 bytes): 128 bytes of low nibbles, 64 of high bit pairs, 16 i8
/// scales, d (f16). Levels are stored +32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q6k<const C: usize>(rows: &Rows, a: &GemmActs, c0: usize, out: &mut [f32]) {
    unsafe {
        let nib = _mm512_set1_epi8(0x0F);
        let pair = _mm512_set1_epi8(0x30);
        let idx: [__m512i; 4] = std::array::from_fn(|j| load512(Q6K_SCALE_IDX[j].as_ptr().cast()));
        // The high bits of the vectors' two halves (values 0..32 and 32..64 of each 64) sit
        // at bits (0, 2) of qh for the low nibbles and (4, 6) for the high ones: shifted to
        // bits 4..6 per 16-bit lane (bits never cross a byte under the 0x30 mask).
        let low_shift = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
        let high_shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
        let mut f = [_mm256_setzero_ps(); C];
        for b in 0..rows.blocks {
            rows.prefetch(b);
            let mut x = [[_mm512_setzero_si512(); 4]; C];
            let mut xsum = [_mm256_setzero_si256(); C];
            for c in 0..C {
                let blk = (c0 + c) * rows.blocks + b;
                let q = a.blocks.as_ptr().add(blk * Q8K_BYTES + Q8K_QS);
                x[c] = std::array::from_fn(|j| load512(q.add(64 * j)));
                xsum[c] = load256(a.sums.as_ptr().add(blk * 8).cast());
            }
            let mut acc = [[_mm512_setzero_si512(); GROUP_ROWS]; C];
            for r in 0..GROUP_ROWS {
                let w = rows.p[r].add(b * rows.size);
                let sc16 = _mm256_cvtepi8_epi16(load128(w.add(192)));
                let sc = _mm512_castsi256_si512(sc16);
                let mut levels = [_mm512_setzero_si512(); 4];
                for h in 0..2 {
                    let ql = load512(w.add(64 * h));
                    let qh = _mm512_broadcast_i64x4(load256(w.add(128 + 32 * h)));
                    let lo_hi = _mm512_and_si512(_mm512_sllv_epi16(qh, low_shift), pair);
                    let hi_hi = _mm512_and_si512(_mm512_srlv_epi16(qh, high_shift), pair);
                    // (a & 0x0F) | b
                    levels[2 * h] = _mm512_ternarylogic_epi32::<0xEC>(ql, lo_hi, nib);
                    levels[2 * h + 1] =
                        _mm512_ternarylogic_epi32::<0xEC>(_mm512_srli_epi16::<4>(ql), hi_hi, nib);
                }
                let scales: [__m512i; 4] =
                    std::array::from_fn(|j| _mm512_permutexvar_epi16(idx[j], sc));
                for c in 0..C {
                    // The +32 of every level: -32 * sum_j sc_j * xsum_j, folded in first.
                    let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, xsum[c]));
                    let mut v =
                        _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), offset));
                    for j in 0..4 {
                        let p = _mm512_maddubs_epi16(levels[j], x[c][j]);
                        v = _mm512_dpwssd_epi32(v, p, scales[j]);
                    }
                    acc[c][r] = v;
                }
            }
            let dw = _mm256_cvtph_ps(rows.f16s(b, 208));
            for c in 0..C {
                let dx = _mm256_set1_ps(*a.d.get_unchecked((c0 + c) * rows.blocks + b));
                let isum = reduce_16(&acc[c]);
                f[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, dx), f[c]);
            }
        }
        for (c, f) in f.into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c * GROUP_ROWS), f);
        }
    }
}
