//! Repacking of weight panels and activations for the register-tiled GEMM.
//!
//! A panel is 16 consecutive weight rows whose levels are unpacked to bytes and interleaved so
//! that one 64-byte vector holds 4 consecutive levels of each of the 16 rows: lane r of a
//! `dpbusd` then accumulates row r against 4 broadcast activation bytes. `dpbusd` multiplies
//! unsigned by signed bytes, and only its signed operand can be a broadcast from memory, so
//! weights are stored unsigned — the raw stored level, `level + offset` — and the activations
//! keep their signed Q8 values (read in place from their blocks). The `offset * sum(x)` this adds is removed with the per-block
//! (legacy) or per-sub-block (K-quant) activation sums.
//!
//! The panel is rebuilt for every matmul (weights stay in their GGUF blocks in the memory
//! map); its cost is O(rows x k) against the GEMM's O(rows x k x n).

use half::f16;
use rayon::prelude::*;

use super::activation::{ActBlocks, QuantizedActivations};
use super::x86_convert::IQ4_UNSIGNED;
use crate::DType;
use crate::quant::blocks::{BlockQ8_0, BlockQ8K, QK_K, QK32, get_scale_min_k4, q3k_scales};

/// Weight rows per panel (one AVX-512 lane each).
pub(super) const PANEL_ROWS: usize = 16;

/// How a panel's integer sums become f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PanelKind {
    /// One f32 scale per block of 32: `d_w * d_x * (sum(u * x) - offset * sum(x))`.
    Legacy { offset: i32 },
    /// Super-blocks of 256 with integer scales per sub-block of `sub` values, plus a second
    /// integer term `P = sum_j coef_j * xsum_j` over the sub-blocks (pairs of them per i32):
    /// with `dmin`, coef = the sub-block mins and the result is
    /// `d_w d_x sum_j sc_j isum_j - dmin_w d_x P`; without, coef = `offset * sc_j` and the
    /// result is `d_w d_x (sum_j sc_j isum_j - P)`.
    KQuant { sub: usize, dmin: bool },
}

/// The GEMM layout of `weight`, if it has one.
pub(super) fn panel_kind(weight: DType) -> Option<PanelKind> {
    Some(match weight {
        DType::Q4_0 => PanelKind::Legacy { offset: 8 },
        DType::Q5_0 => PanelKind::Legacy { offset: 16 },
        DType::Q8_0 | DType::IQ4NL => PanelKind::Legacy { offset: 128 },
        DType::Q4K | DType::Q5K => PanelKind::KQuant {
            sub: 32,
            dmin: true,
        },
        DType::IQ4XS => PanelKind::KQuant {
            sub: 32,
            dmin: false,
        },
        DType::Q2K => PanelKind::KQuant {
            sub: 16,
            dmin: true,
        },
        DType::Q3K | DType::Q6K => PanelKind::KQuant {
            sub: 16,
            dmin: false,
        },
        _ => return None,
    })
}

/// 16 weight rows in GEMM layout. Per-row quantities are stored lane-major: entry
/// `[unit * 16 + r]` belongs to row r.
#[derive(Default)]
pub(super) struct Panel {
    /// Rows actually present (lanes of the others hold stale values and are never stored).
    pub rows: usize,
    pub k: usize,
    /// Unsigned levels, 4 per word: `q[g * 16 + r]` = levels `4g..4g+4` of row r.
    pub q: Vec<u32>,
    /// f32 scale per block (legacy) or super-block.
    pub d: Vec<f32>,
    /// f32 min scale per super-block (K-quants with `dmin`).
    pub dmin: Vec<f32>,
    /// Integer scale per sub-block (K-quants).
    pub sc: Vec<i32>,
    /// Coefficients of the sub-block activation sums, as i16 pairs (K-quants).
    pub coef: Vec<i32>,
    /// Staging: the unpacked levels of each row, `levels[r * k..(r + 1) * k]`, interleaved
    /// into `q` once all rows are in.
    levels: Vec<u8>,
}

impl Panel {
    fn reset(&mut self, k: usize, rows: usize, kind: PanelKind) {
        self.rows = rows;
        self.k = k;
        let lanes = |units: usize| units * PANEL_ROWS;
        reset_vec(&mut self.q, lanes(k / 4));
        reset_vec(&mut self.levels, PANEL_ROWS * k);
        match kind {
            PanelKind::Legacy { .. } => {
                reset_vec(&mut self.d, lanes(k / QK32));
                reset_vec(&mut self.dmin, 0);
                reset_vec(&mut self.sc, 0);
                reset_vec(&mut self.coef, 0);
            }
            PanelKind::KQuant { sub, dmin } => {
                reset_vec(&mut self.d, lanes(k / QK_K));
                reset_vec(&mut self.dmin, if dmin { lanes(k / QK_K) } else { 0 });
                reset_vec(&mut self.sc, lanes(k / sub));
                reset_vec(&mut self.coef, lanes(k / sub / 2));
            }
        }
    }

    /// Stores the levels of one block or super-block (`N` bytes starting at element `start`)
    /// of row `r` in the staging rows.
    #[inline]
    fn put_levels<const N: usize>(&mut self, r: usize, start: usize, levels: &[u8; N]) {
        let at = r * self.k + start;
        self.levels[at..at + N].copy_from_slice(levels);
    }
}

/// Sizes `v` to `len`. Contents are not cleared: every lane of a present row is rewritten by
/// the packer, and lanes of absent rows (a last, partial panel) are never stored by the kernel.
fn reset_vec<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    v.resize(len, T::default());
}

#[inline]
fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Low nibbles of 16 bytes, then high nibbles (the Q4_0 element order).
#[inline]
fn nibbles(qs: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for j in 0..16 {
        out[j] = qs[j] & 0x0F;
        out[j + 16] = qs[j] >> 4;
    }
    out
}

/// Unpacks `rows` (at most 16 weight rows of `k` elements of `weight`) into `panel`.
/// Returns false for types without a GEMM layout or malformed rows.
pub(super) fn pack_panel(weight: DType, rows: &[&[u8]], k: usize, panel: &mut Panel) -> bool {
    let Some(kind) = panel_kind(weight) else {
        return false;
    };
    let size = weight.type_size();
    let row_bytes = k / weight.block_size() * size;
    if rows.len() > PANEL_ROWS
        || !k.is_multiple_of(weight.block_size())
        || rows.iter().any(|r| r.len() != row_bytes)
    {
        return false;
    }
    panel.reset(k, rows.len(), kind);
    // The panel's rows are read one after another, then the GEMM computes for a while: the
    // hardware prefetcher does not run far enough ahead for a small batch (unpacking is then
    // most of the time). Each row asks for the same row of the next panel (the weight matrix
    // is contiguous; past its end the hint is simply wasted).
    for row in rows {
        super::x86_convert::prefetch_l2(
            row.as_ptr().wrapping_add(PANEL_ROWS * row_bytes),
            row_bytes,
        );
    }
    if let PanelKind::Legacy { .. } = kind {
        if !pack_legacy(weight, rows, k, panel) {
            return false;
        }
        return super::gemm::interleave_rows(&panel.levels, k, &mut panel.q);
    }
    for (r, row) in rows.iter().enumerate() {
        for (i, b) in row.chunks_exact(size).enumerate() {
            match weight {
                DType::Q4K | DType::Q5K => pack_q45k(panel, r, i, b, weight == DType::Q5K),
                DType::IQ4XS => pack_iq4xs(panel, r, i, b),
                DType::Q2K => pack_q2k(panel, r, i, b),
                DType::Q3K => pack_q3k(panel, r, i, b),
                DType::Q6K => pack_q6k(panel, r, i, b),
                _ => return false,
            }
        }
    }
    super::gemm::interleave_rows(&panel.levels, k, &mut panel.q)
}

/// 32-element formats: levels and scales unpacked with SIMD (`x86_convert::unpack_legacy_row`).
fn pack_legacy(weight: DType, rows: &[&[u8]], k: usize, panel: &mut Panel) -> bool {
    let mut d = vec![0f32; k / QK32];
    for (r, row) in rows.iter().enumerate() {
        let levels = &mut panel.levels[r * k..(r + 1) * k];
        if !super::x86_convert::unpack_legacy_row(weight, row, levels, &mut d) {
            return false;
        }
        for (o, &d) in panel.d[r..].iter_mut().step_by(PANEL_ROWS).zip(&d) {
            *o = d;
        }
    }
    true
}

/// Stores one super-block's scales and pair coefficients (`S` sub-blocks).
fn k_scales<const S: usize>(
    panel: &mut Panel,
    r: usize,
    sb: usize,
    sc: [i32; S],
    coef: [i32; S],
    d: f32,
    dmin: f32,
) {
    for j in 0..S {
        panel.sc[(sb * S + j) * PANEL_ROWS + r] = sc[j];
    }
    for p in 0..S / 2 {
        panel.coef[(sb * S / 2 + p) * PANEL_ROWS + r] =
            (coef[2 * p] & 0xFFFF) | (coef[2 * p + 1] << 16);
    }
    panel.d[sb * PANEL_ROWS + r] = d;
    if !panel.dmin.is_empty() {
        panel.dmin[sb * PANEL_ROWS + r] = dmin;
    }
}

fn pack_q45k(panel: &mut Panel, r: usize, sb: usize, b: &[u8], fifth_bit: bool) {
    let scales: &[u8; 12] = b[4..16].try_into().unwrap_or(&[0; 12]);
    let qs = if fifth_bit { &b[48..176] } else { &b[16..144] };
    let mut levels = [0u8; QK_K];
    for p in 0..4 {
        for l in 0..32 {
            let q = qs[32 * p + l];
            levels[64 * p + l] = q & 0x0F;
            levels[64 * p + 32 + l] = q >> 4;
        }
    }
    if fifth_bit {
        let qh = &b[16..48];
        for p in 0..4 {
            for l in 0..32 {
                let h = qh[l] >> (2 * p);
                levels[64 * p + l] |= (h & 1) << 4;
                levels[64 * p + 32 + l] |= (h & 2) << 3;
            }
        }
    }
    panel.put_levels(r, sb * QK_K, &levels);
    let sm: [(u8, u8); 8] = std::array::from_fn(|j| get_scale_min_k4(j, scales));
    k_scales(
        panel,
        r,
        sb,
        sm.map(|(s, _)| i32::from(s)),
        sm.map(|(_, m)| i32::from(m)),
        f16_at(b, 0),
        f16_at(b, 2),
    );
}

fn pack_iq4xs(panel: &mut Panel, r: usize, sb: usize, b: &[u8]) {
    let mut levels = [0u8; QK_K];
    for ib in 0..8 {
        let n = nibbles(&b[8 + 16 * ib..24 + 16 * ib]);
        for (l, q) in levels[32 * ib..32 * ib + 32].iter_mut().zip(n) {
            *l = IQ4_UNSIGNED[usize::from(q)];
        }
    }
    panel.put_levels(r, sb * QK_K, &levels);
    let scales_h = u16::from_le_bytes([b[2], b[3]]);
    let sc: [i32; 8] = std::array::from_fn(|ib| {
        let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F;
        let high = (scales_h >> (2 * ib)) & 3;
        (i32::from(low) | (i32::from(high) << 4)) - 32
    });
    k_scales(panel, r, sb, sc, sc.map(|s| 128 * s), f16_at(b, 0), 0.0);
}

fn pack_q2k(panel: &mut Panel, r: usize, sb: usize, b: &[u8]) {
    let qs = &b[16..80];
    let mut levels = [0u8; QK_K];
    for (i, l) in levels.iter_mut().enumerate() {
        let (h, j, kl) = (i / 128, (i / 32) % 4, i % 32);
        *l = (qs[32 * h + kl] >> (2 * j)) & 3;
    }
    panel.put_levels(r, sb * QK_K, &levels);
    let sc: [i32; 16] = std::array::from_fn(|j| i32::from(b[j] & 0x0F));
    let m: [i32; 16] = std::array::from_fn(|j| i32::from(b[j] >> 4));
    k_scales(panel, r, sb, sc, m, f16_at(b, 80), f16_at(b, 82));
}

fn pack_q3k(panel: &mut Panel, r: usize, sb: usize, b: &[u8]) {
    let (hmask, qs) = (&b[0..32], &b[32..96]);
    let mut levels = [0u8; QK_K];
    // Stored level = two low bits + 4 * high bit; the value is that minus 4.
    for (i, l) in levels.iter_mut().enumerate() {
        let (h, j, kl) = (i / 128, (i / 32) % 4, i % 32);
        let low = (qs[32 * h + kl] >> (2 * j)) & 3;
        let high = (hmask[kl] >> (4 * h + j)) & 1;
        *l = low | (high << 2);
    }
    panel.put_levels(r, sb * QK_K, &levels);
    let scales: &[u8; 12] = b[96..108].try_into().unwrap_or(&[0; 12]);
    let sc = q3k_scales(scales).map(i32::from);
    k_scales(panel, r, sb, sc, sc.map(|s| 4 * s), f16_at(b, 108), 0.0);
}

fn pack_q6k(panel: &mut Panel, r: usize, sb: usize, b: &[u8]) {
    let (ql, qh) = (&b[0..128], &b[128..192]);
    let mut levels = [0u8; QK_K];
    for h in 0..2 {
        for l in 0..32 {
            let (lo, hi, bits) = (ql[64 * h + l], ql[64 * h + 32 + l], qh[32 * h + l]);
            levels[128 * h + l] = (lo & 0x0F) | ((bits & 3) << 4);
            levels[128 * h + 32 + l] = (hi & 0x0F) | (((bits >> 2) & 3) << 4);
            levels[128 * h + 64 + l] = (lo >> 4) | (((bits >> 4) & 3) << 4);
            levels[128 * h + 96 + l] = (hi >> 4) | (((bits >> 6) & 3) << 4);
        }
    }
    panel.put_levels(r, sb * QK_K, &levels);
    let sc: [i32; 16] = std::array::from_fn(|j| i32::from(b[192 + j] as i8));
    k_scales(panel, r, sb, sc, sc.map(|s| 32 * s), f16_at(b, 208), 0.0);
}

/// Activations for the GEMM: the Q8 blocks are read in place (`dpbusd` broadcasts their
/// signed levels); alongside, per block (Q8_0) or super-block (Q8_K) of every row, the f32
/// scale and the sums the unsigned weight offsets need: legacy `-offset * sum(x)` per block;
/// K-quants the activation sum of every sub-block, two per i32 (i16 pairs).
pub(super) struct GemmActs<'a> {
    pub n: usize,
    pub k: usize,
    /// All rows of Q8_0 or Q8_K blocks.
    pub blocks: &'a [u8],
    pub block_bytes: usize,
    /// Offset of the levels inside a block.
    pub qs_at: usize,
    pub d: Vec<f32>,
    pub sums: Vec<i32>,
}

/// Prepares quantized activations for a panel kind (`None` if the block format does not
/// match the kind). Large legacy tables are built in parallel.
pub(super) fn gemm_acts(acts: &QuantizedActivations, kind: PanelKind) -> Option<GemmActs<'_>> {
    let (n, k) = (acts.rows(), acts.row_len());
    let (d, sums, block_bytes, qs_at) = match (acts.blocks(), kind) {
        (ActBlocks::Q8_0(blocks), PanelKind::Legacy { offset }) => {
            let d = map_blocks(blocks, |b| b.d.to_f32());
            let sums = map_blocks(blocks, |b| {
                -offset * b.qs.iter().map(|&q| i32::from(q)).sum::<i32>()
            });
            (d, sums, std::mem::size_of::<BlockQ8_0>(), 2)
        }
        (ActBlocks::Q8K(blocks), PanelKind::KQuant { sub, .. }) => {
            let d = blocks.iter().map(|b| b.d).collect();
            let pair = |a: i32, b: i32| (a & 0xFFFF) | (b << 16);
            let mut sums = Vec::with_capacity(blocks.len() * QK_K / sub / 2);
            for b in blocks {
                let s = b.bsums.map(i32::from);
                // Sub-blocks of 16 are the bsums themselves; of 32, sums of two.
                if sub == 16 {
                    sums.extend(s.chunks_exact(2).map(|p| pair(p[0], p[1])));
                } else {
                    sums.extend(s.chunks_exact(4).map(|p| pair(p[0] + p[1], p[2] + p[3])));
                }
            }
            (d, sums, std::mem::size_of::<BlockQ8K>(), 4)
        }
        _ => return None,
    };
    Some(GemmActs {
        n,
        k,
        blocks: acts.as_bytes(),
        block_bytes,
        qs_at,
        d,
        sums,
    })
}

/// `f` over every block, in parallel only when there are enough blocks to pay for a rayon
/// hand-off.
fn map_blocks<B: Sync, T: Send>(blocks: &[B], f: impl Fn(&B) -> T + Sync + Send) -> Vec<T> {
    if blocks.len() < 8192 {
        blocks.iter().map(f).collect()
    } else {
        blocks.par_iter().with_min_len(1024).map(f).collect()
    }
}
