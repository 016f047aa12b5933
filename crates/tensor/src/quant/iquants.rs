//! The IQ ("importance") formats: lattice grids with sign patterns (IQ2_*, IQ3_*), the
//! 1.5/1.75-bit IQ1_S / IQ1_M, and the non-linear IQ4_XS.
//!
//! Per element the f32 arithmetic is ggml's: the sub-block scale first (e.g. IQ2_XXS
//! `d * (0.5 + s) * 0.25`), then `scale * grid_value`, then the sign as a multiply by -1.

use super::DequantizeBlock;
use super::blocks::{
    BlockIQ1M, BlockIQ1S, BlockIQ2S, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, BlockIQ4XS,
    KVALUES_IQ4NL, QK_K, iq1m_scale, iq1m_scale_words, iq4xs_scale,
};
use super::iq_tables::{
    IQ1M_DELTA, IQ1S_DELTA, IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID,
    KMASK_IQ2XS, KSIGNS_IQ2XS,
};

/// Byte j of a grid entry.
#[inline]
fn grid_byte(entry: u64, j: usize) -> u8 {
    (entry >> (8 * j)) as u8
}

/// +1 or -1 for element j of a sign byte.
#[inline]
fn sign(signs: u8, j: usize) -> f32 {
    if signs & KMASK_IQ2XS[j] != 0 {
        -1.0
    } else {
        1.0
    }
}

/// Writes 8 values `scale * grid[j] * sign_j` of one 8-element grid entry.
#[inline]
fn put_grid8(y: &mut [f32], scale: f32, entry: u64, signs: u8) {
    for (j, o) in y[..8].iter_mut().enumerate() {
        *o = scale * f32::from(grid_byte(entry, j)) * sign(signs, j);
    }
}

impl DequantizeBlock for BlockIQ2XXS {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib32, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let w = &self.qs[4 * ib32..4 * ib32 + 4];
            let idx = u32::from(u16::from_le(w[0])) | (u32::from(u16::from_le(w[1])) << 16);
            let aux = u32::from(u16::from_le(w[2])) | (u32::from(u16::from_le(w[3])) << 16);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let entry = IQ2XXS_GRID[((idx >> (8 * l)) & 0xFF) as usize];
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                put_grid8(y, db, entry, signs);
            }
        }
    }
}

impl DequantizeBlock for BlockIQ2XS {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib32, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let s = self.scales[ib32];
            let db = [
                d * (0.5 + f32::from(s & 0x0F)) * 0.25,
                d * (0.5 + f32::from(s >> 4)) * 0.25,
            ];
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let q = u16::from_le(self.qs[4 * ib32 + l]);
                let entry = IQ2XS_GRID[usize::from(q & 511)];
                let signs = KSIGNS_IQ2XS[usize::from(q >> 9)];
                put_grid8(y, db[l / 2], entry, signs);
            }
        }
    }
}

impl DequantizeBlock for BlockIQ2S {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let (qs, signs) = self.qs.split_at(QK_K / 8);
        for (ib32, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let s = self.scales[ib32];
            let db = [
                d * (0.5 + f32::from(s & 0x0F)) * 0.25,
                d * (0.5 + f32::from(s >> 4)) * 0.25,
            ];
            let qh = usize::from(self.qh[ib32]);
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let index = usize::from(qs[4 * ib32 + l]) | ((qh << (8 - 2 * l)) & 0x300);
                put_grid8(y, db[l / 2], IQ2S_GRID[index], signs[4 * ib32 + l]);
            }
        }
    }
}

impl DequantizeBlock for BlockIQ3XXS {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let (qs, scales_and_signs) = self.qs.split_at(QK_K / 4);
        for (ib32, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let a = &scales_and_signs[4 * ib32..4 * ib32 + 4];
            let aux = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                let g1 = IQ3XXS_GRID[usize::from(qs[8 * ib32 + 2 * l])];
                let g2 = IQ3XXS_GRID[usize::from(qs[8 * ib32 + 2 * l + 1])];
                for j in 0..4 {
                    y[j] = db * f32::from((g1 >> (8 * j)) as u8) * sign(signs, j);
                    y[j + 4] = db * f32::from((g2 >> (8 * j)) as u8) * sign(signs, j + 4);
                }
            }
        }
    }
}

impl DequantizeBlock for BlockIQ3S {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib32, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let s = self.scales[ib32 / 2];
            let nibble = if ib32 % 2 == 0 { s & 0x0F } else { s >> 4 };
            let db = d * f32::from(1 + 2 * nibble);
            let qh = usize::from(self.qh[ib32]);
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let q = &self.qs[8 * ib32 + 2 * l..8 * ib32 + 2 * l + 2];
                let g1 = IQ3S_GRID[usize::from(q[0]) | ((qh << (8 - 2 * l)) & 256)];
                let g2 = IQ3S_GRID[usize::from(q[1]) | ((qh << (7 - 2 * l)) & 256)];
                let signs = self.signs[4 * ib32 + l];
                for j in 0..4 {
                    y[j] = db * f32::from((g1 >> (8 * j)) as u8) * sign(signs, j);
                    y[j + 4] = db * f32::from((g2 >> (8 * j)) as u8) * sign(signs, j + 4);
                }
            }
        }
    }
}

/// Writes `scale * (grid[j] + delta)` for one IQ1 grid entry (bytes are -1, 0, 1).
#[inline]
fn put_iq1(y: &mut [f32], scale: f32, entry: u64, delta: f32) {
    for (j, o) in y[..8].iter_mut().enumerate() {
        *o = scale * (f32::from(grid_byte(entry, j) as i8) + delta);
    }
}

impl DequantizeBlock for BlockIQ1S {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let qh = u16::from_le(self.qh[ib]);
            let dl = d * f32::from(2 * ((qh >> 12) & 7) + 1);
            let delta = if qh & 0x8000 != 0 {
                -IQ1S_DELTA
            } else {
                IQ1S_DELTA
            };
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let index =
                    usize::from(self.qs[4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
                put_iq1(y, dl, IQ1S_GRID[index], delta);
            }
        }
    }
}

impl DequantizeBlock for BlockIQ1M {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = iq1m_scale(self).to_f32();
        let sc = iq1m_scale_words(self);
        for (ib, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let word = sc[ib / 2];
            let shift = 6 * (ib % 2);
            let dl1 = d * f32::from(2 * ((word >> shift) & 7) + 1);
            let dl2 = d * f32::from(2 * ((word >> (shift + 3)) & 7) + 1);
            let qh = [
                usize::from(self.qh[2 * ib]),
                usize::from(self.qh[2 * ib + 1]),
            ];
            let qs = &self.qs[4 * ib..4 * ib + 4];
            // Per group of 8: 3 high index bits and the delta sign in one nibble of qh.
            for (l, y) in y.chunks_exact_mut(8).enumerate() {
                let nibble = (qh[l / 2] >> (4 * (l % 2))) & 0x0F;
                let index = usize::from(qs[l]) | ((nibble & 7) << 8);
                let delta = if nibble & 8 != 0 {
                    -IQ1M_DELTA
                } else {
                    IQ1M_DELTA
                };
                let dl = if l < 2 { dl1 } else { dl2 };
                put_iq1(y, dl, IQ1S_GRID[index], delta);
            }
        }
    }
}

impl DequantizeBlock for BlockIQ4XS {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib, y) in y[..QK_K].chunks_exact_mut(32).enumerate() {
            let dl = d * iq4xs_scale(self, ib) as f32;
            let qs = &self.qs[16 * ib..16 * ib + 16];
            for (j, &q) in qs.iter().enumerate() {
                y[j] = dl * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0F)]);
                y[j + 16] = dl * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
            }
        }
    }
}
