//! Integer levels and sub-block scales of each weight block, in element order.
//!
//! A block's value is always `float scale(s) x integer level`; the scalar reference dot
//! products only need the signed integer levels and the integer sub-block scales. (The GEMM
//! packer unpacks the raw unsigned stored levels itself, in `pack` / `x86_convert`.)

use crate::quant::blocks::{
    BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, KVALUES_IQ4NL, QK_K, get_scale_min_k4, iq4xs_scale, q3k_scales,
};

/// Splits 16 bytes of nibbles into 32 levels: low nibbles are elements 0..16, high 16..32.
#[inline]
fn nibbles(qs: &[u8; 16]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (j, &q) in qs.iter().enumerate() {
        out[j] = q & 0x0F;
        out[j + 16] = q >> 4;
    }
    out
}

/// Adds bit 4 to element j (0..32) when bit j of the little-endian `qh` word is set.
#[inline]
fn with_fifth_bit(mut levels: [u8; 32], qh: [u8; 4]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    for (j, l) in levels.iter_mut().enumerate() {
        *l |= (((qh >> j) & 1) as u8) << 4;
    }
    levels
}

/// Q4_0 levels `q - 8` (-8..=7).
pub fn q4_0(b: &BlockQ4_0) -> [i8; 32] {
    nibbles(&b.qs).map(|q| q as i8 - 8)
}

/// Q4_1 levels `q` (0..=15); the value is `d * q + m`.
pub fn q4_1(b: &BlockQ4_1) -> [u8; 32] {
    nibbles(&b.qs)
}

/// Q5_0 levels `q - 16` (-16..=15).
pub fn q5_0(b: &BlockQ5_0) -> [i8; 32] {
    with_fifth_bit(nibbles(&b.qs), b.qh).map(|q| q as i8 - 16)
}

/// Q5_1 levels `q` (0..=31); the value is `d * q + m`.
pub fn q5_1(b: &BlockQ5_1) -> [u8; 32] {
    with_fifth_bit(nibbles(&b.qs), b.qh)
}

/// IQ4_NL levels: the non-linear table entries (-127..=113).
pub fn iq4nl(b: &BlockIQ4NL) -> [i8; 32] {
    nibbles(&b.qs).map(|q| KVALUES_IQ4NL[usize::from(q)])
}

/// Q2_K levels (0..=3) and, per sub-block of 16, (scale, min), both 0..=15.
pub fn q2k(b: &BlockQ2K) -> ([u8; QK_K], [(u8, u8); 16]) {
    let mut levels = [0u8; QK_K];
    // Element 128h + 32j + 16k + l is bits 2j..2j+2 of qs[32h + 16k + l].
    for (i, level) in levels.iter_mut().enumerate() {
        let (h, j, kl) = (i / 128, (i / 32) % 4, i % 32);
        *level = (b.qs[32 * h + kl] >> (2 * j)) & 3;
    }
    let scales = b.scales.map(|s| (s & 0x0F, s >> 4));
    (levels, scales)
}

/// Q3_K levels (-4..=3) and the 16 signed sub-block scales (-32..=31).
pub fn q3k(b: &BlockQ3K) -> ([i8; QK_K], [i8; 16]) {
    let mut levels = [0i8; QK_K];
    // Element 128h + 32j + 16k + l: two low bits as Q2_K, the third is bit 4h + j of
    // hmask[16k + l] (clear means minus 4).
    for (i, level) in levels.iter_mut().enumerate() {
        let (h, j, kl) = (i / 128, (i / 32) % 4, i % 32);
        let low = ((b.qs[32 * h + kl] >> (2 * j)) & 3) as i8;
        let high_set = b.hmask[kl] & (1 << (4 * h + j)) != 0;
        *level = if high_set { low } else { low - 4 };
    }
    (levels, q3k_scales(&b.scales))
}

/// Q4_K levels (0..=15) and, per sub-block of 32, (scale, min), both 0..=63.
pub fn q4k(b: &BlockQ4K) -> ([u8; QK_K], [(u8, u8); 8]) {
    let mut levels = [0u8; QK_K];
    // Sub-blocks 2p and 2p+1 are the low and high nibbles of qs[32p..32p+32].
    for p in 0..4 {
        for l in 0..32 {
            let q = b.qs[32 * p + l];
            levels[64 * p + l] = q & 0x0F;
            levels[64 * p + 32 + l] = q >> 4;
        }
    }
    (
        levels,
        std::array::from_fn(|j| get_scale_min_k4(j, &b.scales)),
    )
}

/// Q5_K levels (0..=31) and, per sub-block of 32, (scale, min), both 0..=63.
pub fn q5k(b: &BlockQ5K) -> ([u8; QK_K], [(u8, u8); 8]) {
    let mut levels = [0u8; QK_K];
    // As Q4_K, plus bit 4 from qh[l]: bit 2p for the low nibbles, 2p+1 for the high ones.
    for p in 0..4 {
        for l in 0..32 {
            let q = b.qs[32 * p + l];
            let h = b.qh[l] >> (2 * p);
            levels[64 * p + l] = (q & 0x0F) | ((h & 1) << 4);
            levels[64 * p + 32 + l] = (q >> 4) | ((h & 2) << 3);
        }
    }
    (
        levels,
        std::array::from_fn(|j| get_scale_min_k4(j, &b.scales)),
    )
}

/// Q6_K levels `q - 32` (-32..=31) and the 16 signed sub-block scales.
pub fn q6k(b: &BlockQ6K) -> ([i8; QK_K], [i8; 16]) {
    let mut levels = [0i8; QK_K];
    // Per half h: 4 runs of 32 elements; run t takes a nibble of ql[64h + 32(t%2) + l] (low
    // for t < 2) and bits 2t..2t+2 of qh[32h + l].
    for h in 0..2 {
        for t in 0..4 {
            for l in 0..32 {
                let ql = b.ql[64 * h + 32 * (t % 2) + l];
                let low = if t < 2 { ql & 0x0F } else { ql >> 4 };
                let high = (b.qh[32 * h + l] >> (2 * t)) & 3;
                levels[128 * h + 32 * t + l] = (low | (high << 4)) as i8 - 32;
            }
        }
    }
    (levels, b.scales)
}

/// IQ4_XS levels (table entries, -127..=113) and the 8 signed sub-block scales (-32..=31).
pub fn iq4xs(b: &BlockIQ4XS) -> ([i8; QK_K], [i8; 8]) {
    let mut levels = [0i8; QK_K];
    for ib in 0..8 {
        for j in 0..16 {
            let q = b.qs[16 * ib + j];
            levels[32 * ib + j] = KVALUES_IQ4NL[usize::from(q & 0x0F)];
            levels[32 * ib + 16 + j] = KVALUES_IQ4NL[usize::from(q >> 4)];
        }
    }
    (levels, std::array::from_fn(|ib| iq4xs_scale(b, ib) as i8))
}
