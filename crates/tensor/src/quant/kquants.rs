//! The 256-element K-quant super-blocks (Q2_K ... Q8_K) and the ternary TQ1_0 / TQ2_0.
//!
//! Operation order follows ggml's `dequantize_row_*` exactly: sub-block scale products are
//! formed first (`d * sc`, `dmin * m`), then `scale * q - min` per element.

use super::DequantizeBlock;
use super::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, BlockTQ1_0, BlockTQ2_0, QK_K,
    get_scale_min_k4, q3k_scales,
};

impl DequantizeBlock for BlockQ2K {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        // 2 halves of 128 elements; each reads 32 bytes of qs four times (2 bits at a time),
        // and every 16 outputs use the next scale byte.
        for (half, y) in y[..QK_K].chunks_exact_mut(128).enumerate() {
            let q = &self.qs[32 * half..32 * half + 32];
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                let shift = 2 * j;
                for (k, y) in y.chunks_exact_mut(16).enumerate() {
                    let sc = self.scales[8 * half + 2 * j + k];
                    let dl = d * f32::from(sc & 0x0F);
                    let ml = min * f32::from(sc >> 4);
                    for (l, o) in y.iter_mut().enumerate() {
                        *o = dl * f32::from((q[16 * k + l] >> shift) & 3) - ml;
                    }
                }
            }
        }
    }
}

impl DequantizeBlock for BlockQ3K {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d_all = self.d.to_f32();
        let scales = q3k_scales(&self.scales);
        for (half, y) in y[..QK_K].chunks_exact_mut(128).enumerate() {
            let q = &self.qs[32 * half..32 * half + 32];
            for (j, y) in y.chunks_exact_mut(32).enumerate() {
                let shift = 2 * j;
                let mask = 1u8 << (4 * half + j);
                for (k, y) in y.chunks_exact_mut(16).enumerate() {
                    let dl = d_all * f32::from(scales[8 * half + 2 * j + k]);
                    for (l, o) in y.iter_mut().enumerate() {
                        let i = 16 * k + l;
                        let low = ((q[i] >> shift) & 3) as i8;
                        let offset = if self.hmask[i] & mask != 0 { 0 } else { 4 };
                        *o = dl * f32::from(low - offset);
                    }
                }
            }
        }
    }
}

impl DequantizeBlock for BlockQ4K {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (pair, y) in y[..QK_K].chunks_exact_mut(64).enumerate() {
            let q = &self.qs[32 * pair..32 * pair + 32];
            let (sc1, m1) = get_scale_min_k4(2 * pair, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * pair + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let (lo, hi) = y.split_at_mut(32);
            for (l, &b) in q.iter().enumerate() {
                lo[l] = d1 * f32::from(b & 0x0F) - m1;
                hi[l] = d2 * f32::from(b >> 4) - m2;
            }
        }
    }
}

impl DequantizeBlock for BlockQ5K {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let min = self.dmin.to_f32();
        for (pair, y) in y[..QK_K].chunks_exact_mut(64).enumerate() {
            let ql = &self.qs[32 * pair..32 * pair + 32];
            let (u1, u2) = (1u8 << (2 * pair), 2u8 << (2 * pair));
            let (sc1, m1) = get_scale_min_k4(2 * pair, &self.scales);
            let (sc2, m2) = get_scale_min_k4(2 * pair + 1, &self.scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let (lo, hi) = y.split_at_mut(32);
            for l in 0..32 {
                let h1 = if self.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[l] & u2 != 0 { 16 } else { 0 };
                lo[l] = d1 * f32::from((ql[l] & 0x0F) + h1) - m1;
                hi[l] = d2 * f32::from((ql[l] >> 4) + h2) - m2;
            }
        }
    }
}

impl DequantizeBlock for BlockQ6K {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (half, y) in y[..QK_K].chunks_exact_mut(128).enumerate() {
            let ql = &self.ql[64 * half..64 * half + 64];
            let qh = &self.qh[32 * half..32 * half + 32];
            let sc = &self.scales[8 * half..8 * half + 8];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                y[l] = d * f32::from(sc[is]) * f32::from(q1);
                y[l + 32] = d * f32::from(sc[is + 2]) * f32::from(q2);
                y[l + 64] = d * f32::from(sc[is + 4]) * f32::from(q3);
                y[l + 96] = d * f32::from(sc[is + 6]) * f32::from(q4);
            }
        }
    }
}

impl DequantizeBlock for BlockQ8K {
    fn dequantize_block(&self, y: &mut [f32]) {
        for (o, &q) in y[..QK_K].iter_mut().zip(&self.qs) {
            *o = self.d * f32::from(q);
        }
    }
}

/// Powers of 3 that bring trit n of a base-3 byte to the top (ggml's fixed-point trick:
/// `byte * 3^n` wraps mod 256, then `* 3 >> 8` reads the leading trit).
const POW3: [u8; 5] = [1, 3, 9, 27, 81];

#[inline]
fn trit(byte: u8, n: usize) -> i8 {
    let q = byte.wrapping_mul(POW3[n]);
    ((u16::from(q) * 3) >> 8) as i8 - 1
}

impl DequantizeBlock for BlockTQ1_0 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        let mut out = y[..QK_K].iter_mut();
        // qs[0..32]: 5 trits each, written trit-major (160 values); qs[32..48]: 5 trits
        // each (80 values); qh[0..4]: 4 trits each (16 values).
        let groups: [(&[u8], usize); 3] = [(&self.qs[..32], 5), (&self.qs[32..], 5), (&self.qh, 4)];
        for (bytes, trits) in groups {
            for n in 0..trits {
                for &b in bytes {
                    if let Some(o) = out.next() {
                        *o = f32::from(trit(b, n)) * d;
                    }
                }
            }
        }
    }
}

impl DequantizeBlock for BlockTQ2_0 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (half, y) in y[..QK_K].chunks_exact_mut(128).enumerate() {
            let q = &self.qs[32 * half..32 * half + 32];
            for (l, y) in y.chunks_exact_mut(32).enumerate() {
                for (o, &b) in y.iter_mut().zip(q) {
                    *o = f32::from(((b >> (2 * l)) & 3) as i8 - 1) * d;
                }
            }
        }
    }
}
