//! Byte layouts of the ggml block formats, as `#[repr(C)]` plain-old-data structs.
//!
//! Every struct has exactly ggml's field order and size (checked at compile time), so a
//! slice of tensor bytes can be viewed as a slice of blocks with [`as_blocks`]. Multi-byte
//! fields are little-endian on disk; like ggml, this code assumes a little-endian host.
//!
//! The small unpacking helpers shared by dequantization and the dot products
//! ([`get_scale_min_k4`], [`q3k_scales`], [`iq4xs_scale`], [`iq1m_scale`],
//! [`e8m0_to_f32_half`], [`ue4m3_to_f32_half`]) live here too.

use std::borrow::Cow;

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::{DType, Result, TensorError};

/// Elements in a K-quant / IQ super-block.
pub const QK_K: usize = 256;
/// Elements in a legacy block (Q4_0 ... Q8_1, IQ4_NL, MXFP4).
pub const QK32: usize = 32;
/// Elements in an NVFP4 block (four sub-blocks of 16, one UE4M3 scale each).
pub const QK_NVFP4: usize = 64;
/// Elements per NVFP4 sub-block.
pub const QK_NVFP4_SUB: usize = 16;

/// The 16 non-linear levels of IQ4_NL / IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// E2M1 (FP4) values doubled, so they are integers; the block scales carry the 1/2.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// A ggml block struct: its storage type and how many elements one block holds.
pub trait Block: Pod {
    const DTYPE: DType;
    const ELEMS: usize;
}

macro_rules! block {
    ($(#[$doc:meta])* $name:ident, $dtype:ident, $elems:expr, $bytes:literal { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Pod, Zeroable)]
        pub struct $name { $(pub $field: $ty,)* }

        impl Block for $name {
            const DTYPE: DType = DType::$dtype;
            const ELEMS: usize = $elems;
        }

        const _: () = assert!(std::mem::size_of::<$name>() == $bytes);
    };
}

block!(
    /// `d * (q - 8)`, 4-bit q; low nibbles are elements 0..16, high nibbles 16..32.
    BlockQ4_0, Q4_0, QK32, 18 { d: f16, qs: [u8; 16] }
);
block!(
    /// `d * q + m`, 4-bit q, nibble order as Q4_0.
    BlockQ4_1, Q4_1, QK32, 20 { d: f16, m: f16, qs: [u8; 16] }
);
block!(
    /// `d * (q - 16)`, 5-bit q: nibbles as Q4_0, bit 4 of element j is bit j of `qh`.
    BlockQ5_0, Q5_0, QK32, 22 { d: f16, qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// `d * q + m`, 5-bit q laid out as Q5_0.
    BlockQ5_1, Q5_1, QK32, 24 { d: f16, m: f16, qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// `d * q`, 8-bit signed q.
    BlockQ8_0, Q8_0, QK32, 34 { d: f16, qs: [i8; 32] }
);
block!(
    /// Activation format: Q8_0 plus `s = d * sum(q)`.
    BlockQ8_1, Q8_1, QK32, 36 { d: f16, s: f16, qs: [i8; 32] }
);
block!(
    /// 16 sub-blocks of 16: `scales[i]` low nibble = scale, high nibble = min; 2-bit q.
    BlockQ2K, Q2K, QK_K, 84 { scales: [u8; 16], qs: [u8; 64], d: f16, dmin: f16 }
);
block!(
    /// 16 sub-blocks of 16, 6-bit signed scales ([`q3k_scales`]); 2 low bits in `qs`,
    /// the third bit in `hmask` (set = no offset, clear = minus 4).
    BlockQ3K, Q3K, QK_K, 110 { hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16 }
);
block!(
    /// 8 sub-blocks of 32 with 6-bit scale and min ([`get_scale_min_k4`]); 4-bit q.
    BlockQ4K, Q4K, QK_K, 144 { d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128] }
);
block!(
    /// Q4_K plus a fifth bit per element in `qh`.
    BlockQ5K, Q5K, QK_K, 176 { d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }
);
block!(
    /// 16 sub-blocks of 16 with signed 8-bit scales; 6-bit q minus 32.
    BlockQ6K, Q6K, QK_K, 210 { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 }
);
block!(
    /// Activation format of the K-quant dot products: f32 scale, 8-bit q, and the sums of
    /// each group of 16 q.
    BlockQ8K, Q8K, QK_K, 292 { d: f32, qs: [i8; 256], bsums: [i16; 16] }
);
block!(
    /// Per 32 elements 8 bytes read as two u32: the first holds 4 grid indices (one byte
    /// each), the second 4 x 7 sign-pattern indices and a 4-bit scale in the top bits.
    BlockIQ2XXS, IQ2XXS, QK_K, 66 { d: f16, qs: [u16; 32] }
);
block!(
    /// Per 8 elements one u16: 9-bit grid index, 7-bit sign index; 4-bit scales per 16.
    BlockIQ2XS, IQ2XS, QK_K, 74 { d: f16, qs: [u16; 32], scales: [u8; 8] }
);
block!(
    /// `qs[0..32]` grid index low bits, `qs[32..64]` sign bytes, `qh` 2 high index bits
    /// per group of 8, 4-bit scales per 16.
    BlockIQ2S, IQ2S, QK_K, 82 { d: f16, qs: [u8; 64], qh: [u8; 8], scales: [u8; 8] }
);
block!(
    /// `qs[0..64]` grid indices (4 elements each), `qs[64..96]` 8 u32 of 4 x 7 sign bits
    /// plus a 4-bit scale.
    BlockIQ3XXS, IQ3XXS, QK_K, 98 { d: f16, qs: [u8; 96] }
);
block!(
    /// 9-bit grid indices (`qs` + one bit of `qh`), explicit sign bits, 4-bit scales per 32.
    BlockIQ3S, IQ3S, QK_K, 110 { d: f16, qs: [u8; 64], qh: [u8; 8], signs: [u8; 32], scales: [u8; 4] }
);
block!(
    /// 11-bit grid indices (`qs` + 3 bits of `qh`); `qh` also holds a 3-bit scale and the
    /// sign of the delta per 32.
    BlockIQ1S, IQ1S, QK_K, 50 { d: f16, qs: [u8; 32], qh: [u16; 8] }
);
block!(
    /// No `d` field: the f16 scale is spread over the top nibbles of the four u16 words of
    /// `scales` ([`iq1m_scale`]).
    BlockIQ1M, IQ1M, QK_K, 56 { qs: [u8; 32], qh: [u8; 16], scales: [u8; 8] }
);
block!(
    /// `d * KVALUES_IQ4NL[q]`, nibble order as Q4_0.
    BlockIQ4NL, IQ4NL, QK32, 18 { d: f16, qs: [u8; 16] }
);
block!(
    /// 8 sub-blocks of 32 with 6-bit scales ([`iq4xs_scale`]); per sub-block 16 bytes in
    /// Q4_0 nibble order.
    BlockIQ4XS, IQ4XS, QK_K, 136 { d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128] }
);
block!(
    /// Ternary, base-3 packed: 5 trits per byte in `qs`, 4 per byte in `qh`.
    BlockTQ1_0, TQ1_0, QK_K, 54 { qs: [u8; 48], qh: [u8; 4], d: f16 }
);
block!(
    /// Ternary, 2 bits per element (`q - 1`).
    BlockTQ2_0, TQ2_0, QK_K, 66 { qs: [u8; 64], d: f16 }
);
block!(
    /// E8M0 shared exponent ([`e8m0_to_f32_half`]) and 32 E2M1 nibbles (Q4_0 order).
    BlockMXFP4, MXFP4, QK32, 17 { e: u8, qs: [u8; 16] }
);
block!(
    /// Four UE4M3 sub-block scales ([`ue4m3_to_f32_half`]); sub-block `s` is
    /// `qs[8s..8s+8]`, low nibble = element j, high nibble = element j + 8.
    BlockNVFP4, NVFP4, QK_NVFP4, 36 { d: [u8; 4], qs: [u8; 32] }
);

/// Views `bytes` as blocks: zero-copy when the slice is aligned for `B` (always the case for
/// tensor storage), otherwise an aligned copy.
pub fn as_blocks<B: Block>(bytes: &[u8]) -> Result<Cow<'_, [B]>> {
    let size = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(size) {
        return Err(TensorError::InvalidView(format!(
            "{} bytes are not a whole number of {} blocks ({size} bytes each)",
            bytes.len(),
            B::DTYPE
        )));
    }
    Ok(match bytemuck::try_cast_slice::<u8, B>(bytes) {
        Ok(blocks) => Cow::Borrowed(blocks),
        Err(_) => {
            let mut owned = vec![B::zeroed(); bytes.len() / size];
            bytemuck::cast_slice_mut::<B, u8>(&mut owned).copy_from_slice(bytes);
            Cow::Owned(owned)
        }
    })
}

/// Scale and min of sub-block `j` (0..8) of Q4_K / Q5_K, each 6 bits.
///
/// Bytes 0..4 hold the low 6 bits of scales 0..4 (top 2 bits: high bits of scales 4..8),
/// bytes 4..8 the same for the mins, bytes 8..12 the low nibbles of scales/mins 4..8.
#[inline]
pub fn get_scale_min_k4(j: usize, scales: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        let sc = (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4);
        let m = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
        (sc, m)
    }
}

/// The 16 signed 6-bit sub-block scales of Q3_K (already minus 32).
///
/// Scale i: low nibble from byte `i % 8` (low nibble for i < 8, high for i >= 8), top two
/// bits from byte `8 + i % 4` at bit `2 * (i / 4)`.
#[inline]
pub fn q3k_scales(scales: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = (scales[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *o = ((low | (high << 4)) as i8) - 32;
    }
    out
}

/// Signed 6-bit scale of IQ4_XS sub-block `ib` (0..8), already minus 32.
#[inline]
pub fn iq4xs_scale(b: &BlockIQ4XS, ib: usize) -> i32 {
    let low = (b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F;
    let high = (u16::from_le(b.scales_h) >> (2 * ib)) & 0x03;
    (i32::from(low) | (i32::from(high) << 4)) - 32
}

/// The f16 super-block scale of IQ1_M: the top nibbles of its four scale words, word 0 in
/// the lowest nibble.
#[inline]
pub fn iq1m_scale(b: &BlockIQ1M) -> f16 {
    let w = iq1m_scale_words(b);
    f16::from_bits((w[0] >> 12) | ((w[1] >> 8) & 0x00F0) | ((w[2] >> 4) & 0x0F00) | (w[3] & 0xF000))
}

/// The four little-endian u16 scale words of IQ1_M (3-bit sub-block scales in bits 0..12).
#[inline]
pub fn iq1m_scale_words(b: &BlockIQ1M) -> [u16; 4] {
    let s = &b.scales;
    [
        u16::from_le_bytes([s[0], s[1]]),
        u16::from_le_bytes([s[2], s[3]]),
        u16::from_le_bytes([s[4], s[5]]),
        u16::from_le_bytes([s[6], s[7]]),
    ]
}

/// Half of the E8M0 scale `2^(e - 127)`, i.e. `2^(e - 128)`, built from bits (an f32
/// subnormal for e < 2) exactly as ggml does.
#[inline]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        u32::from(e - 1) << 23
    };
    f32::from_bits(bits)
}

/// Half of an unsigned E4M3 scale (bias 7, bit 7 ignored); 0x00 and 0x7F (NaN) give 0.
#[inline]
pub fn ue4m3_to_f32_half(x: u8) -> f32 {
    if x == 0 || x == 0x7F {
        return 0.0;
    }
    let exp = i32::from((x >> 3) & 0x0F);
    let man = f32::from(x & 0x07);
    let raw = if exp == 0 {
        man * pow2(-9)
    } else {
        (1.0 + man / 8.0) * pow2(exp - 7)
    };
    raw * 0.5
}

/// 2^e for a normal-range exponent.
#[inline]
fn pow2(e: i32) -> f32 {
    f32::from_bits(((e + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml_type_sizes() {
        fn check<B: Block>() {
            assert_eq!(
                std::mem::size_of::<B>(),
                B::DTYPE.type_size(),
                "{}",
                B::DTYPE
            );
            assert_eq!(B::ELEMS, B::DTYPE.block_size(), "{}", B::DTYPE);
        }
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ2K>();
        check::<BlockQ3K>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockQ8K>();
        check::<BlockIQ2XXS>();
        check::<BlockIQ2XS>();
        check::<BlockIQ2S>();
        check::<BlockIQ3XXS>();
        check::<BlockIQ3S>();
        check::<BlockIQ1S>();
        check::<BlockIQ1M>();
        check::<BlockIQ4NL>();
        check::<BlockIQ4XS>();
        check::<BlockTQ1_0>();
        check::<BlockTQ2_0>();
        check::<BlockMXFP4>();
        check::<BlockNVFP4>();
    }

    #[test]
    fn as_blocks_handles_misaligned_and_partial_input() {
        let bytes = vec![0u8; 145];
        assert_eq!(as_blocks::<BlockQ4K>(&bytes[1..]).unwrap().len(), 1);
        assert!(as_blocks::<BlockQ4K>(&bytes).is_err());
    }

    #[test]
    fn scale_decoders() {
        assert_eq!(e8m0_to_f32_half(127), 0.5);
        // 2^-128 and 2^-127: f32 subnormals.
        assert_eq!(e8m0_to_f32_half(0), f32::from_bits(0x0020_0000));
        assert_eq!(e8m0_to_f32_half(1), f32::from_bits(0x0040_0000));
        assert_eq!(e8m0_to_f32_half(2), f32::MIN_POSITIVE);
        assert_eq!(ue4m3_to_f32_half(0x38), 0.5); // exp 7, man 0 -> 1.0
        assert_eq!(ue4m3_to_f32_half(0x01), 2f32.powi(-10));
        assert_eq!(ue4m3_to_f32_half(0x7F), 0.0);
        assert_eq!(ue4m3_to_f32_half(0xFF), 240.0);
    }
}
