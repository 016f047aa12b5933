//! Repacking of weight panels and activations for the register-tiled GEMM.
//!
//! A panel is 16 consecutive weight rows, unpacked to i8 levels and interleaved so that one
//! 64-byte vector holds 4 consecutive levels of each of the 16 rows: lane r of a `dpbusd`
//! then accumulates row r against 4 broadcast activation bytes. Activations are stored as
//! `q + 128` (u8, the unsigned operand of `dpbusd`); the `128 * sum(levels)` this adds is a
//! per-row constant folded in at packing time (`corr`).
//!
//! The panel is rebuilt for every matmul (weights stay in their GGUF blocks in the memory
//! map); its cost is O(rows x k) against the GEMM's O(rows x k x n).

use bytemuck::Pod;

use super::activation::{ActBlocks, QuantizedActivations};
use super::values;
use crate::DType;
use crate::quant::blocks::{
    BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K,
    BlockQ8_0, QK_K, QK32,
};

/// Weight rows per panel (one AVX-512 lane each).
pub(super) const PANEL_ROWS: usize = 16;

/// How a panel's integer sums are scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PanelKind {
    /// One f32 scale per block of 32: `d_w * d_x * isum`.
    Legacy,
    /// Super-blocks of 256 with integer sub-block scales (sub-blocks of `sub` values) and, when
    /// `mins`, a `dmin * sum(m_j * bsum_j)` term.
    KQuant { sub: usize, mins: bool },
}

/// The GEMM layout of `weight`, if it has one.
pub(super) fn panel_kind(weight: DType) -> Option<PanelKind> {
    Some(match weight {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4NL => PanelKind::Legacy,
        DType::Q4K | DType::Q5K => PanelKind::KQuant {
            sub: 32,
            mins: true,
        },
        DType::IQ4XS => PanelKind::KQuant {
            sub: 32,
            mins: false,
        },
        DType::Q2K => PanelKind::KQuant {
            sub: 16,
            mins: true,
        },
        DType::Q3K | DType::Q6K => PanelKind::KQuant {
            sub: 16,
            mins: false,
        },
        _ => return None,
    })
}

/// 16 weight rows in GEMM layout. Per-row quantities are stored lane-major: entry
/// `[unit * 16 + r]` belongs to row r.
#[derive(Default)]
pub(super) struct Panel {
    /// Rows actually present (the others are zero).
    pub rows: usize,
    pub k: usize,
    /// Levels: `q[(g * 16 + r) * 4 + t]` = level `4g + t` of row r.
    pub q: Vec<i8>,
    /// Integer correction per block (legacy) or super-block: `-128 * sum(levels)`, weighted by
    /// the sub-block scales for K-quants.
    pub corr: Vec<i32>,
    /// f32 scale per block (legacy) or super-block.
    pub d: Vec<f32>,
    /// f32 min scale per super-block (K-quants with mins).
    pub dmin: Vec<f32>,
    /// Integer scale per sub-block (K-quants).
    pub sc: Vec<i32>,
    /// Sub-block mins in i16 pairs: pair p holds `m[2p] | m[2p+1] << 16` (K-quants with mins).
    pub mins: Vec<i32>,
}

impl Panel {
    fn reset(&mut self, k: usize, rows: usize, kind: PanelKind) {
        self.rows = rows;
        self.k = k;
        let lanes = |units: usize| units * PANEL_ROWS;
        let (scale_units, sub_units, pair_units) = match kind {
            PanelKind::Legacy => (k / QK32, 0, 0),
            PanelKind::KQuant { sub, mins } => {
                (k / QK_K, k / sub, if mins { k / sub / 2 } else { 0 })
            }
        };
        let has_mins = matches!(kind, PanelKind::KQuant { mins: true, .. });
        reset_vec(&mut self.q, k * PANEL_ROWS);
        reset_vec(&mut self.corr, lanes(scale_units));
        reset_vec(&mut self.d, lanes(scale_units));
        reset_vec(
            &mut self.dmin,
            if has_mins { lanes(scale_units) } else { 0 },
        );
        reset_vec(&mut self.sc, lanes(sub_units));
        reset_vec(&mut self.mins, lanes(pair_units));
    }

    /// Stores `levels` (consecutive, starting at element `start`) of row `r`.
    fn put_levels(&mut self, r: usize, start: usize, levels: &[i8]) {
        for (g, four) in levels.chunks_exact(4).enumerate() {
            let at = ((start / 4 + g) * PANEL_ROWS + r) * 4;
            self.q[at..at + 4].copy_from_slice(four);
        }
    }
}

fn reset_vec<T: Default + Clone>(v: &mut Vec<T>, len: usize) {
    v.clear();
    v.resize(len, T::default());
}

/// Unpacks `rows` (at most 16 weight rows of `k` elements of `weight`) into `panel`.
/// Returns false for types without a GEMM layout or malformed rows.
pub(super) fn pack_panel(weight: DType, rows: &[&[u8]], k: usize, panel: &mut Panel) -> bool {
    let Some(kind) = panel_kind(weight) else {
        return false;
    };
    let row_bytes = k / weight.block_size() * weight.type_size();
    if rows.len() > PANEL_ROWS
        || k % weight.block_size() != 0
        || rows.iter().any(|r| r.len() != row_bytes)
    {
        return false;
    }
    panel.reset(k, rows.len(), kind);
    for (r, row) in rows.iter().enumerate() {
        match weight {
            DType::Q4_0 => legacy::<BlockQ4_0>(panel, r, row, |b| (values::q4_0(b), b.d.to_f32())),
            DType::Q5_0 => legacy::<BlockQ5_0>(panel, r, row, |b| (values::q5_0(b), b.d.to_f32())),
            DType::Q8_0 => legacy::<BlockQ8_0>(panel, r, row, |b| (b.qs, b.d.to_f32())),
            DType::IQ4NL => {
                legacy::<BlockIQ4NL>(panel, r, row, |b| (values::iq4nl(b), b.d.to_f32()))
            }
            DType::Q4K => kquant::<BlockQ4K, 8>(panel, r, row, |b| {
                let (levels, sm) = values::q4k(b);
                (
                    levels.map(|l| l as i8),
                    sm.map(|(s, _)| i32::from(s)),
                    sm.map(|(_, m)| i32::from(m)),
                    b.d.to_f32(),
                    b.dmin.to_f32(),
                )
            }),
            DType::Q5K => kquant::<BlockQ5K, 8>(panel, r, row, |b| {
                let (levels, sm) = values::q5k(b);
                (
                    levels.map(|l| l as i8),
                    sm.map(|(s, _)| i32::from(s)),
                    sm.map(|(_, m)| i32::from(m)),
                    b.d.to_f32(),
                    b.dmin.to_f32(),
                )
            }),
            DType::IQ4XS => kquant::<BlockIQ4XS, 8>(panel, r, row, |b| {
                let (levels, sc) = values::iq4xs(b);
                (levels, sc.map(i32::from), [0; 8], b.d.to_f32(), 0.0)
            }),
            DType::Q2K => kquant::<BlockQ2K, 16>(panel, r, row, |b| {
                let (levels, sm) = values::q2k(b);
                (
                    levels.map(|l| l as i8),
                    sm.map(|(s, _)| i32::from(s)),
                    sm.map(|(_, m)| i32::from(m)),
                    b.d.to_f32(),
                    b.dmin.to_f32(),
                )
            }),
            DType::Q3K => kquant::<BlockQ3K, 16>(panel, r, row, |b| {
                let (levels, sc) = values::q3k(b);
                (levels, sc.map(i32::from), [0; 16], b.d.to_f32(), 0.0)
            }),
            DType::Q6K => kquant::<BlockQ6K, 16>(panel, r, row, |b| {
                let (levels, sc) = values::q6k(b);
                (levels, sc.map(i32::from), [0; 16], b.d.to_f32(), 0.0)
            }),
            _ => return false,
        }
    }
    true
}

fn legacy<B: Pod>(panel: &mut Panel, r: usize, row: &[u8], unpack: impl Fn(&B) -> ([i8; 32], f32)) {
    let size = std::mem::size_of::<B>();
    for (blk, bytes) in row.chunks_exact(size).enumerate() {
        let (levels, d) = unpack(&bytemuck::pod_read_unaligned(bytes));
        panel.put_levels(r, blk * QK32, &levels);
        let sum: i32 = levels.iter().map(|&l| i32::from(l)).sum();
        panel.corr[blk * PANEL_ROWS + r] = -128 * sum;
        panel.d[blk * PANEL_ROWS + r] = d;
    }
}

/// Levels, sub-block scales, sub-block mins, d and dmin of one super-block.
type KUnpacked<const S: usize> = ([i8; QK_K], [i32; S], [i32; S], f32, f32);

fn kquant<B: Pod, const S: usize>(
    panel: &mut Panel,
    r: usize,
    row: &[u8],
    unpack: impl Fn(&B) -> KUnpacked<S>,
) {
    let size = std::mem::size_of::<B>();
    let sub = QK_K / S;
    let has_mins = !panel.mins.is_empty();
    for (sb, bytes) in row.chunks_exact(size).enumerate() {
        let (levels, sc, mins, d, dmin) = unpack(&bytemuck::pod_read_unaligned(bytes));
        panel.put_levels(r, sb * QK_K, &levels);
        let mut weighted = 0i32;
        for (j, chunk) in levels.chunks_exact(sub).enumerate() {
            let sum: i32 = chunk.iter().map(|&l| i32::from(l)).sum();
            weighted += sc[j] * sum;
            panel.sc[(sb * S + j) * PANEL_ROWS + r] = sc[j];
        }
        panel.corr[sb * PANEL_ROWS + r] = -128 * weighted;
        panel.d[sb * PANEL_ROWS + r] = d;
        if has_mins {
            panel.dmin[sb * PANEL_ROWS + r] = dmin;
            for p in 0..S / 2 {
                let pair = (mins[2 * p] & 0xFFFF) | (mins[2 * p + 1] << 16);
                panel.mins[(sb * S / 2 + p) * PANEL_ROWS + r] = pair;
            }
        }
    }
}

/// Activations in GEMM layout: per row (a GEMM column) `k` bytes of `q + 128`, one f32 scale
/// per block (Q8_0) or super-block (Q8_K), and for kinds with mins the activation sums of
/// each pair of sub-blocks as i16 pairs.
#[derive(Default)]
pub(super) struct GemmActs {
    pub n: usize,
    pub k: usize,
    pub xu: Vec<u8>,
    pub d: Vec<f32>,
    pub bsum_pairs: Vec<i32>,
}

impl GemmActs {
    pub(super) fn scales_per_row(&self) -> usize {
        if self.n == 0 {
            0
        } else {
            self.d.len() / self.n
        }
    }
    pub(super) fn pairs_per_row(&self) -> usize {
        if self.n == 0 {
            0
        } else {
            self.bsum_pairs.len() / self.n
        }
    }
}

/// Converts quantized activations to the GEMM layout for a panel kind (`None` if the block
/// format does not match the kind).
pub(super) fn gemm_acts(acts: &QuantizedActivations, kind: PanelKind) -> Option<GemmActs> {
    let (n, k) = (acts.rows(), acts.row_len());
    let mut out = GemmActs {
        n,
        k,
        xu: Vec::with_capacity(n * k),
        ..Default::default()
    };
    match (acts.blocks(), kind) {
        (ActBlocks::Q8_0(blocks), PanelKind::Legacy) => {
            out.d.reserve(blocks.len());
            for b in blocks {
                out.xu.extend(b.qs.iter().map(|&q| (q as u8) ^ 0x80));
                out.d.push(b.d.to_f32());
            }
        }
        (ActBlocks::Q8K(blocks), PanelKind::KQuant { sub, mins }) => {
            out.d.reserve(blocks.len());
            for b in blocks {
                out.xu.extend(b.qs.iter().map(|&q| (q as u8) ^ 0x80));
                out.d.push(b.d);
                if mins {
                    // Sums per sub-block (bsums are per 16), then packed two per i32.
                    let sums: Vec<i32> = if sub == 16 {
                        b.bsums.iter().map(|&s| i32::from(s)).collect()
                    } else {
                        b.bsums
                            .chunks_exact(2)
                            .map(|s| i32::from(s[0]) + i32::from(s[1]))
                            .collect()
                    };
                    out.bsum_pairs
                        .extend(sums.chunks_exact(2).map(|s| (s[0] & 0xFFFF) | (s[1] << 16)));
                }
            }
        }
        _ => return None,
    }
    Some(out)
}
