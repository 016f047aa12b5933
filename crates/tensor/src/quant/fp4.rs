//! The 4-bit float formats MXFP4 and NVFP4: E2M1 values (stored doubled, as the integers
//! of [`KVALUES_MXFP4`]) times a block scale that carries the compensating 1/2.
//!
//! MXFP4 scales can be tiny (E8M0 down to 2^-128), so results may be f32 subnormals; the
//! plain f32 multiply reproduces them exactly (Rust never flushes subnormals).

use super::DequantizeBlock;
use super::blocks::{
    BlockMXFP4, BlockNVFP4, KVALUES_MXFP4, QK_NVFP4_SUB, e8m0_to_f32_half, ue4m3_to_f32_half,
};

impl DequantizeBlock for BlockMXFP4 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let y = &mut y[..32];
        let d = e8m0_to_f32_half(self.e);
        for (j, &q) in self.qs.iter().enumerate() {
            y[j] = f32::from(KVALUES_MXFP4[usize::from(q & 0x0F)]) * d;
            y[j + 16] = f32::from(KVALUES_MXFP4[usize::from(q >> 4)]) * d;
        }
    }
}

impl DequantizeBlock for BlockNVFP4 {
    fn dequantize_block(&self, y: &mut [f32]) {
        let half = QK_NVFP4_SUB / 2;
        for (s, y) in y[..64].chunks_exact_mut(QK_NVFP4_SUB).enumerate() {
            let d = ue4m3_to_f32_half(self.d[s]);
            let qs = &self.qs[s * half..(s + 1) * half];
            for (j, &q) in qs.iter().enumerate() {
                y[j] = f32::from(KVALUES_MXFP4[usize::from(q & 0x0F)]) * d;
                y[j + half] = f32::from(KVALUES_MXFP4[usize::from(q >> 4)]) * d;
            }
        }
    }
}
