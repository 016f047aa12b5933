//! GGUF block formats. (Being written: dequantization of every type.)
use crate::{DType, Result, TensorError};

/// Dequantizes `src` (whole blocks of `dtype`) into `dst` (`dst.len()` elements).
pub fn dequantize(dtype: DType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    match dtype {
        DType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            Ok(())
        }
        _ => Err(TensorError::Unsupported { op: "dequantize", dtype, backend: "cpu" }),
    }
}
