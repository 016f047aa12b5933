//! The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1 and IQ4_NL.
//!
//! Each element is computed with the same f32 operations, in the same order, as ggml's
//! `dequantize_row_*` (integer level first, then `level * d` or `level * d + m`), so the
//! results are bit-identical.

use super::DequantizeBlock;
use super::blocks::{
    BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1, KVALUES_IQ4NL,
};

impl DequantizeBlock for BlockQ4_0 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let y = &mut y[..32];
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = (i32::from(q & 0x0F) - 8) as f32 * d;
            y[j + 16] = (i32::from(q >> 4) - 8) as f32 * d;
        }
    }
}

impl DequantizeBlock for BlockQ4_1 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let y = &mut y[..32];
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = f32::from(q & 0x0F) * d + m;
            y[j + 16] = f32::from(q >> 4) * d + m;
        }
    }
}

/// Bit 4 of element j (0..32) of a Q5 block: bit j of the little-endian `qh` word.
#[inline]
fn q5_high_bits(qh: [u8; 4]) -> u32 {
    u32::from_le_bytes(qh)
}

impl DequantizeBlock for BlockQ5_0 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let y = &mut y[..32];
        let d = self.d.to_f32();
        let qh = q5_high_bits(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = ((u32::from(q & 0x0F) | h0) as i32 - 16) as f32 * d;
            y[j + 16] = ((u32::from(q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }
}

impl DequantizeBlock for BlockQ5_1 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let y = &mut y[..32];
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let qh = q5_high_bits(self.qh);
        for (j, &q) in self.qs.iter().enumerate() {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            y[j] = (u32::from(q & 0x0F) | h0) as f32 * d + m;
            y[j + 16] = (u32::from(q >> 4) | h1) as f32 * d + m;
        }
    }
}

impl DequantizeBlock for BlockQ8_0 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in y[..32].iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

impl DequantizeBlock for BlockQ8_1 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let d = self.d.to_f32();
        for (o, &q) in y[..32].iter_mut().zip(&self.qs) {
            *o = f32::from(q) * d;
        }
    }
}

impl DequantizeBlock for BlockIQ4NL {
    fn dequantize_block(&self, y: &mut [f32]) {
        let y = &mut y[..32];
        let d = self.d.to_f32();
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = d * f32::from(KVALUES_IQ4NL[usize::from(q & 0x0F)]);
            y[j + 16] = d * f32::from(KVALUES_IQ4NL[usize::from(q >> 4)]);
        }
    }
}
