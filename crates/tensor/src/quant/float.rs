//! Plain element types: F32, F16, BF16, F64 and the integer types, to f32; and the f32 ->
//! f16 / bf16 conversions used when writing tensors.
//!
//! F16 and BF16 widen exactly (f16 subnormals become normal f32; bf16 subnormals stay f32
//! subnormals). F64 and I32/I64 round to nearest f32: those types are only ever shown, not
//! computed with.

use half::{bf16, f16, slice::HalfFloatSliceExt};

/// Reads `src` as little-endian `N`-byte elements and converts each with `f`.
#[inline]
fn convert<const N: usize>(src: &[u8], dst: &mut [f32], f: impl Fn([u8; N]) -> f32) {
    for (o, c) in dst.iter_mut().zip(src.chunks_exact(N)) {
        let mut bytes = [0u8; N];
        bytes.copy_from_slice(c);
        *o = f(bytes);
    }
}

pub(super) fn f32_le(src: &[u8], dst: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, f32>(src) {
        Ok(values) => dst.copy_from_slice(values),
        Err(_) => convert(src, dst, f32::from_le_bytes),
    }
}

pub(super) fn f16_le(src: &[u8], dst: &mut [f32]) {
    match bytemuck::try_cast_slice::<u8, f16>(src) {
        // half picks F16C at run time when available; the conversion is exact either way.
        Ok(values) => values.convert_to_f32_slice(dst),
        Err(_) => convert(src, dst, |b| f16::from_le_bytes(b).to_f32()),
    }
}

pub(super) fn bf16_le(src: &[u8], dst: &mut [f32]) {
    convert(src, dst, |b| {
        f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16)
    });
}

pub(super) fn f64_le(src: &[u8], dst: &mut [f32]) {
    convert(src, dst, |b| f64::from_le_bytes(b) as f32);
}

pub(super) fn i8_le(src: &[u8], dst: &mut [f32]) {
    convert(src, dst, |b: [u8; 1]| f32::from(b[0] as i8));
}

pub(super) fn i16_le(src: &[u8], dst: &mut [f32]) {
    convert(src, dst, |b| f32::from(i16::from_le_bytes(b)));
}

pub(super) fn i32_le(src: &[u8], dst: &mut [f32]) {
    convert(src, dst, |b| i32::from_le_bytes(b) as f32);
}

pub(super) fn i64_le(src: &[u8], dst: &mut [f32]) {
    convert(src, dst, |b| i64::from_le_bytes(b) as f32);
}

/// f32 -> f16, round to nearest even (what F16C and ggml do); overflow gives ±inf.
#[inline]
pub fn f32_to_f16(x: f32) -> f16 {
    f16::from_f32(x)
}

/// f32 -> bf16 the way ggml does it: round to nearest even on the bits, NaN kept NaN (made
/// quiet) instead of being rounded into infinity.
#[inline]
pub fn f32_to_bf16(x: f32) -> bf16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return bf16::from_bits(((bits >> 16) | 64) as u16);
    }
    let rounded = (u64::from(bits) + 0x7fff + u64::from((bits >> 16) & 1)) >> 16;
    bf16::from_bits(rounded as u16)
}

/// Converts the first `min(src.len(), dst.len())` values to f16 with [`f32_to_f16`].
pub fn f32_to_f16_slice(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    dst[..n].convert_from_f32_slice(&src[..n]);
}

/// Converts the first `min(src.len(), dst.len())` values to bf16 with [`f32_to_bf16`].
pub fn f32_to_bf16_slice(src: &[f32], dst: &mut [bf16]) {
    for (o, &x) in dst.iter_mut().zip(src) {
        *o = f32_to_bf16(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16(1.0).to_bits(), 0x3f80);
        // Halfway cases round to even.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)).to_bits(), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)).to_bits(), 0x3f82);
        assert_eq!(f32_to_bf16(f32::INFINITY).to_bits(), 0x7f80);
        assert!(f32_to_bf16(f32::NAN).to_f32().is_nan());
        assert_eq!(f32_to_bf16(f32::MAX).to_bits(), 0x7f80); // rounds up to inf like ggml
    }

    #[test]
    fn f16_round_trip_of_every_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_nan() {
                continue;
            }
            let mut out = [0f32];
            f16_le(&bits.to_le_bytes(), &mut out);
            assert_eq!(out[0].to_bits(), h.to_f32().to_bits());
            assert_eq!(f32_to_f16(out[0]).to_bits(), bits);
        }
    }
}
