//! AVX-512 VNNI row dot products of the 32-element formats for few activation columns, in the
//! GEMM's f32 order.
//!
//! Batch invariance: a weight row's result must not depend on whether its column went through
//! this path (n < `gemm_min_cols`) or the panel GEMM. The GEMM gives every weight row one f32
//! lane and folds block b in as `f = fma(float(isum_b), d_w[b] * d_x[b], f)` for b in order;
//! this kernel does exactly that, with 8 weight rows in the 8 f32 lanes of a ymm. The integer
//! sums (exact, so their order is free) are formed per row with `dpbusd` on the unpacked block
//! and reduced across lanes into "lane = row" order with a short transpose-add, so the f32
//! chain costs one FMA per block per 8 rows and its latency hides behind the integer work.
//!
//! The activation tables the GEMM uses (`GemmActs`: the f32 scale and `-offset * sum(x)` of
//! every block) are computed once and shared by every weight row.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::pack::GemmActs;
use super::x86::{has_avx512_vnni, load128, load256, nibbles_32};
use super::x86_convert::IQ4_UNSIGNED;
use crate::DType;
use crate::quant::blocks::QK32;

/// Weight rows per call (one f32 lane each).
pub(super) const GROUP_ROWS: usize = 8;

/// How far ahead of the group being read the decode kernels (this one and `gemv_k`) prefetch,
/// into L1 (`T0`). Tuned on two AMD EPYC machine kinds, interleaved per decoded token in one
/// process: with 48 KiB of L1 per core (two 512-bit FMA units) 6–12 KiB are equally fast and
/// 24–48 KiB slower; with 32 KiB of L1 (AVX-512 on 256-bit units) 6 KiB decodes Gemma 3 270M
/// 5–10% and Qwen2.5 0.5B 0–5% faster than 12 KiB, 4 KiB is as fast as 6, into L2 (`T1`) is
/// no faster, non-temporal (`NTA`) 0–4% faster on Qwen only (not taken on one machine kind's
/// word). Without any prefetch the 178 MB output matrix streams at half the speed.
pub(super) const PREFETCH_BYTES: usize = 6 * 1024;

/// The legacy format tags the kernel is instantiated for.
const Q4_0: u8 = 0;
const Q5_0: u8 = 1;
const Q8_0: u8 = 2;
const IQ4_NL: u8 = 3;

/// Dot products of `rows` consecutive weight rows (`w`: their bytes, `row_bytes` each, at most
/// [`GROUP_ROWS`]) with activation rows `cols` of `acts` (prepared for the type's offset, see
/// `pack::gemm_acts`): `out[i * GROUP_ROWS + r]` = row r against `cols.start + i`.
/// Returns false (doing nothing) for other types, mismatched sizes or without AVX-512 VNNI.
pub(super) fn dot_group(
    weight: DType,
    w: &[u8],
    row_bytes: usize,
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
    let rows = w.len().checked_div(row_bytes).unwrap_or(0);
    let fits = has_avx512_vnni()
        && (1..=GROUP_ROWS).contains(&rows)
        && w.len() == rows * row_bytes
        && row_bytes == blocks * weight.type_size()
        && cols.end <= acts.n
        && out.len() >= cols.len() * GROUP_ROWS
        && acts.d.len() == acts.n * blocks
        && acts.sums.len() == acts.n * blocks
        && acts.blocks.len() == acts.n * blocks * acts.block_bytes
        && acts.qs_at + QK32 <= acts.block_bytes;
    if !fits {
        return false;
    }
    let mut c = cols.start;
    let mut o = out;
    while c < cols.end {
        // Several columns per pass share the unpacked weight blocks.
        let step = match cols.end - c {
            8.. => 8,
            4..=7 => 4,
            2 | 3 => 2,
            _ => 1,
        };
        // SAFETY: features and all lengths checked above.
        unsafe {
            // One instantiation per (format, columns-per-pass); the 4- and 8-column passes
            // use the transposing kernel.
            macro_rules! by_tag {
                ($kernel:ident, $c:literal) => {
                    match tag {
                        Q4_0 => $kernel::<Q4_0, $c>(w, row_bytes, rows, acts, c, o),
                        Q5_0 => $kernel::<Q5_0, $c>(w, row_bytes, rows, acts, c, o),
                        Q8_0 => $kernel::<Q8_0, $c>(w, row_bytes, rows, acts, c, o),
                        _ => $kernel::<IQ4_NL, $c>(w, row_bytes, rows, acts, c, o),
                    }
                };
            }
            match step {
                8 => by_tag!(group_wide, 8),
                4 => by_tag!(group_wide, 4),
                2 => by_tag!(group, 2),
                _ => by_tag!(group, 1),
            }
        }
        c += step;
        o = &mut o[step * GROUP_ROWS..];
    }
    true
}

/// The unsigned stored levels of the block at `x` (the GEMM panel's values).
#[inline(always)]
unsafe fn levels<const T: u8>(x: *const u8) -> __m256i {
    unsafe {
        match T {
            Q4_0 => nibbles_32(x.add(2)),
            Q5_0 => {
                let nib = nibbles_32(x.add(6));
                let qh = u32::from_le_bytes(std::ptr::read_unaligned(x.add(2).cast()));
                _mm256_mask_add_epi8(nib, qh, nib, _mm256_set1_epi8(16))
            }
            Q8_0 => _mm256_xor_si256(load256(x.add(2)), _mm256_set1_epi8(-128)),
            _ => _mm256_shuffle_epi8(
                _mm256_broadcastsi128_si256(load128(IQ4_UNSIGNED.as_ptr())),
                nibbles_32(x.add(2)),
            ),
        }
    }
}

/// The unsigned stored levels of two rows' blocks at `a` and `b`, `a`'s in the low half:
/// [`levels`] of both, with the nibbles of the two rows split in one pass (half the vector
/// instructions per row of two `levels` and an insert).
#[inline(always)]
unsafe fn levels_pair<const T: u8>(a: *const u8, b: *const u8) -> __m512i {
    unsafe {
        // 128-bit lanes (a, a, b, b), shifted by (0, 4, 0, 4): low nibbles, then high ones.
        let nibbles = |qs: usize| {
            let v = _mm512_inserti64x4::<1>(
                _mm512_castsi256_si512(_mm256_broadcastsi128_si256(load128(a.add(qs)))),
                _mm256_broadcastsi128_si256(load128(b.add(qs))),
            );
            let shifts = _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4);
            _mm512_and_si512(_mm512_srlv_epi64(v, shifts), _mm512_set1_epi8(0x0F))
        };
        match T {
            Q4_0 => nibbles(2),
            Q5_0 => {
                let bit =
                    |p: *const u8| u32::from_le_bytes(std::ptr::read_unaligned(p.add(2).cast()));
                let high = u64::from(bit(a)) | (u64::from(bit(b)) << 32);
                let nib = nibbles(6);
                _mm512_mask_add_epi8(nib, high, nib, _mm512_set1_epi8(16))
            }
            Q8_0 => _mm512_xor_si512(
                _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(load256(a.add(2))),
                    load256(b.add(2)),
                ),
                _mm512_set1_epi8(-128),
            ),
            _ => _mm512_shuffle_epi8(
                _mm512_broadcast_i32x4(load128(IQ4_UNSIGNED.as_ptr())),
                nibbles(2),
            ),
        }
    }
}

/// `v[i]` holds rows i (low half) and i + 4 (high half), 8 partial i32 sums each; returns the
/// 8 row totals in row order.
#[inline(always)]
pub(super) unsafe fn reduce_rows(v: [__m512i; 4]) -> __m256i {
    unsafe {
        let u0 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(v[0], v[1]),
            _mm512_unpackhi_epi32(v[0], v[1]),
        );
        let u1 = _mm512_add_epi32(
            _mm512_unpacklo_epi32(v[2], v[3]),
            _mm512_unpackhi_epi32(v[2], v[3]),
        );
        // Per 128-bit lane: the 4-lane sums of v0, v1, v2, v3.
        let w = _mm512_add_epi32(_mm512_unpacklo_epi64(u0, u1), _mm512_unpackhi_epi64(u0, u1));
        // 128-bit lanes (0, 2, 1, 3): adding the halves joins the two quarters of each row.
        let w = _mm512_shuffle_i64x2::<0b11_01_10_00>(w, w);
        _mm256_add_epi32(_mm512_castsi512_si256(w), _mm512_extracti64x4_epi64::<1>(w))
    }
}

/// What [`group`] and [`group_wide`] share: the rows' and columns' pointers, the row scales,
/// and the prefetch of the rows ahead.
struct Group<const C: usize> {
    /// Bytes per block of the format.
    size: usize,
    blocks: usize,
    /// Row r's first byte (missing rows of a last, partial group repeat the last row; their
    /// lanes are dropped).
    p: [*const u8; GROUP_ROWS],
    /// Per column: its first block's levels, its block scales, its `-offset * sum(x)` terms.
    xs: [*const u8; C],
    ds: [*const f32; C],
    sums: [*const i32; C],
    block_bytes: usize,
    ahead: *const u8,
}

impl<const C: usize> Group<C> {
    /// SAFETY: the caller (`dot_group`) checked that `w` holds `rows` (1..=8) rows of
    /// `row_bytes` and that the activation tables cover columns `c0..c0 + C`.
    #[inline(always)]
    unsafe fn new<const T: u8>(
        w: &[u8],
        row_bytes: usize,
        rows: usize,
        a: &GemmActs,
        c0: usize,
    ) -> Self {
        unsafe {
            let size = match T {
                Q4_0 | IQ4_NL => 18,
                Q5_0 => 22,
                _ => 34,
            };
            let blocks = a.k / QK32;
            let row_at = |r: usize| r.min(rows - 1) * row_bytes;
            // The 8 rows are read as 8 short streams, which the hardware prefetcher does not
            // follow far enough ahead; `prefetch` fetches the rows PREFETCH_BYTES on (the same
            // bytes in address order) at the pace they are consumed. Addresses past the matrix
            // are never dereferenced: a prefetch does not fault.
            let ahead = w
                .as_ptr()
                .wrapping_add((GROUP_ROWS * row_bytes).max(PREFETCH_BYTES));
            Self {
                size,
                blocks,
                p: std::array::from_fn(|r| w.as_ptr().add(row_at(r))),
                xs: std::array::from_fn(|c| {
                    a.blocks
                        .as_ptr()
                        .add((c0 + c) * blocks * a.block_bytes + a.qs_at)
                }),
                ds: std::array::from_fn(|c| a.d.as_ptr().add((c0 + c) * blocks)),
                sums: std::array::from_fn(|c| a.sums.as_ptr().add((c0 + c) * blocks)),
                block_bytes: a.block_bytes,
                ahead,
            }
        }
    }

    /// Prefetches the part of the rows ahead that block `b` of this group corresponds to.
    #[inline(always)]
    fn prefetch(&self, b: usize) {
        prefetch_ahead(self.ahead, b, GROUP_ROWS * self.size);
    }

    /// The f16 scales of the 8 rows' block at byte `at` of each row, as f32 lanes. Scalar
    /// loads joined in general registers: a `vpgatherdd` costs more than the rest of the
    /// block's work on AMD cores.
    #[inline(always)]
    unsafe fn row_scales(&self, at: usize) -> __m256 {
        unsafe { _mm256_cvtph_ps(f16_lanes(&self.p, at)) }
    }

    /// Folds block `b`'s integer sums `isum` (lane = row) of column `c` into `f` in the
    /// GEMM's order: `f = fma(float(isum), d_w * d_x, f)`.
    #[inline(always)]
    unsafe fn fold(&self, c: usize, b: usize, isum: __m256i, dw: __m256, f: __m256) -> __m256 {
        unsafe {
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*self.ds[c].add(b)));
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), scale, f)
        }
    }
}

/// Prefetches bytes `b * per_block..(b + 1) * per_block` past `ahead`: the part of the rows
/// ahead that block `b` of a group of rows corresponds to, at the pace the group reads.
#[inline(always)]
pub(super) fn prefetch_ahead(ahead: *const u8, b: usize, per_block: usize) {
    let mut line = b * per_block;
    while line < (b + 1) * per_block {
        // SAFETY: a prefetch of any address is harmless; the pointer only wraps.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast()) };
        line += 64;
    }
}

/// The f16 at byte `at` of each of the 8 rows `p`, as 16-bit lanes 0..8 of an xmm. Scalar
/// loads joined in general registers: a `vpgatherdd` costs more than the rest of a block's
/// work on AMD cores.
///
/// # Safety
/// Every `p[r] + at` is readable for 2 bytes.
#[inline(always)]
pub(super) unsafe fn f16_lanes(p: &[*const u8; GROUP_ROWS], at: usize) -> __m128i {
    unsafe {
        let s = |r: usize| u64::from(std::ptr::read_unaligned(p[r].add(at).cast::<u16>()));
        let lo = s(0) | s(1) << 16 | s(2) << 32 | s(3) << 48;
        let hi = s(4) | s(5) << 16 | s(6) << 32 | s(7) << 48;
        _mm_set_epi64x(hi as i64, lo as i64)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group<const T: u8, const C: usize>(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    a: &GemmActs,
    c0: usize,
    out: &mut [f32],
) {
    unsafe {
        let g = Group::<C>::new::<T>(w, row_bytes, rows, a, c0);
        let mut f = [_mm256_setzero_ps(); C];
        for b in 0..g.blocks {
            g.prefetch(b);
            let at = b * g.size;
            let mut wz = [_mm512_setzero_si512(); 4];
            for (i, wz) in wz.iter_mut().enumerate() {
                *wz = levels_pair::<T>(g.p[i].add(at), g.p[i + 4].add(at));
            }
            let dw = g.row_scales(at);
            for (c, f) in f.iter_mut().enumerate() {
                let x = _mm512_broadcast_i64x4(load256(g.xs[c].add(b * g.block_bytes)));
                let mut v = [_mm512_setzero_si512(); 4];
                for (v, wz) in v.iter_mut().zip(wz) {
                    *v = _mm512_dpbusd_epi32(*v, wz, x);
                }
                // Adds -offset * sum(x): the unsigned levels' offset, removed.
                let isum = _mm256_add_epi32(reduce_rows(v), _mm256_set1_epi32(*g.sums[c].add(b)));
                *f = g.fold(c, b, isum, dw, *f);
            }
        }
        for (c, f) in f.into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c * GROUP_ROWS), f);
        }
    }
}

/// `l[r]` = the 32 levels of row r; returns `q[j]` with lane r = bytes 4j..4j+4 of row r (an
/// 8x8 transpose of 32-bit elements).
#[inline(always)]
unsafe fn quads_by_row(l: [__m256i; 8]) -> [__m256i; 8] {
    unsafe {
        let t = [
            _mm256_unpacklo_epi32(l[0], l[1]),
            _mm256_unpackhi_epi32(l[0], l[1]),
            _mm256_unpacklo_epi32(l[2], l[3]),
            _mm256_unpackhi_epi32(l[2], l[3]),
            _mm256_unpacklo_epi32(l[4], l[5]),
            _mm256_unpackhi_epi32(l[4], l[5]),
            _mm256_unpacklo_epi32(l[6], l[7]),
            _mm256_unpackhi_epi32(l[6], l[7]),
        ];
        // Per 128-bit half: u[0] = quad 0 (4) of rows 0-3, u[1] quad 1 (5), u[2] 2 (6), u[3] 3 (7);
        // u[4..8] the same for rows 4-7.
        let u = [
            _mm256_unpacklo_epi64(t[0], t[2]),
            _mm256_unpackhi_epi64(t[0], t[2]),
            _mm256_unpacklo_epi64(t[1], t[3]),
            _mm256_unpackhi_epi64(t[1], t[3]),
            _mm256_unpacklo_epi64(t[4], t[6]),
            _mm256_unpackhi_epi64(t[4], t[6]),
            _mm256_unpacklo_epi64(t[5], t[7]),
            _mm256_unpackhi_epi64(t[5], t[7]),
        ];
        [
            _mm256_permute2x128_si256::<0x20>(u[0], u[4]),
            _mm256_permute2x128_si256::<0x20>(u[1], u[5]),
            _mm256_permute2x128_si256::<0x20>(u[2], u[6]),
            _mm256_permute2x128_si256::<0x20>(u[3], u[7]),
            _mm256_permute2x128_si256::<0x31>(u[0], u[4]),
            _mm256_permute2x128_si256::<0x31>(u[1], u[5]),
            _mm256_permute2x128_si256::<0x31>(u[2], u[6]),
            _mm256_permute2x128_si256::<0x31>(u[3], u[7]),
        ]
    }
}

/// [`group`] for many columns: the 8 rows' levels are transposed once per block so that a
/// `dpbusd` against 4 broadcast activation bytes leaves row r's partial sum in lane r (no
/// per-column reduction). The integer sums are exact and the f32 fold is `group`'s, so the
/// results are bit-identical to it.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn group_wide<const T: u8, const C: usize>(
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    a: &GemmActs,
    c0: usize,
    out: &mut [f32],
) {
    unsafe {
        let g = Group::<C>::new::<T>(w, row_bytes, rows, a, c0);
        let mut f = [_mm256_setzero_ps(); C];
        for b in 0..g.blocks {
            g.prefetch(b);
            let at = b * g.size;
            let q = quads_by_row(std::array::from_fn(|r| levels::<T>(g.p[r].add(at))));
            let dw = g.row_scales(at);
            for (c, f) in f.iter_mut().enumerate() {
                let x = g.xs[c].add(b * g.block_bytes);
                // Starts from -offset * sum(x): the unsigned levels' offset, removed.
                let mut isum = _mm256_set1_epi32(*g.sums[c].add(b));
                for (j, q) in q.iter().enumerate() {
                    let quad = std::ptr::read_unaligned(x.add(4 * j).cast::<i32>());
                    isum = _mm256_dpbusd_epi32(isum, *q, _mm256_set1_epi32(quad));
                }
                *f = g.fold(c, b, isum, dw, *f);
            }
        }
        for (c, f) in f.into_iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(c * GROUP_ROWS), f);
        }
    }
}
