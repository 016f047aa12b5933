use proptest::prelude::*;

use super::*;

/// Every block type (the plain types have no per-element slow path).
const BLOCK_TYPES: &[DType] = &[
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q8_1,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::Q8K,
    DType::IQ2XXS,
    DType::IQ2XS,
    DType::IQ2S,
    DType::IQ3XXS,
    DType::IQ3S,
    DType::IQ1S,
    DType::IQ1M,
    DType::IQ4NL,
    DType::IQ4XS,
    DType::TQ1_0,
    DType::TQ2_0,
    DType::MXFP4,
    DType::NVFP4,
];

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

fn check_against_slow(dtype: DType, bytes: &[u8]) {
    let n = bytes.len() / dtype.type_size() * dtype.block_size();
    let mut out = vec![0f32; n];
    dequantize(dtype, bytes, &mut out).unwrap();
    for (bi, block) in bytes.chunks_exact(dtype.type_size()).enumerate() {
        for i in 0..dtype.block_size() {
            let want = slow::element(dtype, block, i).unwrap();
            let got = out[bi * dtype.block_size() + i];
            assert!(
                same(got, want),
                "{dtype} block {bi} element {i}: {got:e} vs slow {want:e}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random bytes (any f16 scale, including inf/NaN) never panic and match the slow path,
    /// for every block type.
    #[test]
    fn random_blocks_match_slow_path(n_blocks in 1usize..4, seed in any::<u64>(), offset in 0usize..3) {
        let mut state = seed | 1;
        for &dtype in BLOCK_TYPES {
            let mut bytes = vec![0u8; offset + n_blocks * dtype.type_size()];
            for b in bytes.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            // A non-zero offset exercises the unaligned (copying) path.
            check_against_slow(dtype, &bytes[offset..]);
        }
    }

    /// Wrong sizes are errors, never panics, for every type.
    #[test]
    fn bad_sizes_are_errors(which in 0..DType::ALL.len(), n in 0usize..600, extra in 1usize..40) {
        let dtype = DType::ALL[which];
        let src = vec![0u8; n];
        let mut dst = vec![0f32; n + extra];
        // n bytes can never fill n + extra elements: always an error.
        let whole = dequantize(dtype, &src, &mut dst);
        prop_assert!(whole.is_err(), "{dtype}: {n} bytes into {} elements", n + extra);
        check_size_result(whole, dtype, n, n + extra)?;
        // Half the bytes: an error unless the sizes happen to agree (n = 0).
        check_size_result(dequantize_row(dtype, &src[..n / 2], &mut dst[..n]), dtype, n / 2, n)?;
    }
}

/// The variant `check_sizes` must give for `src_len` bytes into `dst_len` elements: a
/// `PartialBlock` when `dst_len` is not a whole number of blocks, else a `ShapeMismatch`
/// unless the byte count is exactly right.
fn check_size_result(
    got: Result<()>,
    dtype: DType,
    src_len: usize,
    dst_len: usize,
) -> std::result::Result<(), TestCaseError> {
    let whole_blocks = dst_len.is_multiple_of(dtype.block_size());
    let fits = whole_blocks && dst_len / dtype.block_size() * dtype.type_size() == src_len;
    match got {
        Err(TensorError::PartialBlock {
            dtype: d,
            len,
            block,
        }) => {
            prop_assert!(
                !whole_blocks,
                "{dtype}: PartialBlock for {dst_len} elements"
            );
            prop_assert_eq!((d, len, block), (dtype, dst_len, dtype.block_size()));
        }
        Err(TensorError::ShapeMismatch { op, .. }) => {
            prop_assert!(
                whole_blocks && !fits,
                "{dtype}: ShapeMismatch for {src_len} -> {dst_len}"
            );
            prop_assert_eq!(op, "dequantize");
        }
        Ok(()) => prop_assert!(
            fits,
            "{dtype}: {src_len} bytes -> {dst_len} elements accepted"
        ),
        Err(e) => prop_assert!(false, "{dtype}: unexpected error {e}"),
    }
    Ok(())
}

#[test]
fn every_block_type_on_every_byte_pattern_matches_slow_path() {
    // Blocks filled with one repeated byte: hits every nibble/bit pattern value.
    for &dtype in BLOCK_TYPES {
        let mut bytes = Vec::new();
        for v in 0..=255u8 {
            bytes.extend(std::iter::repeat_n(v, dtype.type_size()));
        }
        check_against_slow(dtype, &bytes);
    }
}

#[test]
fn size_errors() {
    let mut dst = vec![0f32; 256];
    assert!(matches!(
        dequantize(DType::Q4K, &[0u8; 143], &mut dst),
        Err(TensorError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        dequantize(DType::Q4K, &[0u8; 144], &mut dst[..100]),
        Err(TensorError::PartialBlock { .. })
    ));
    assert!(dequantize(DType::F32, &[0u8; 12], &mut dst[..3]).is_ok());
    assert!(dequantize(DType::F32, &[0u8; 13], &mut dst[..3]).is_err());
    assert!(dequantize(DType::Q4K, &[], &mut []).is_ok());
}

#[test]
fn parallel_path_equals_row_path() {
    for &dtype in &[
        DType::Q4K,
        DType::Q8_0,
        DType::IQ2XS,
        DType::F16,
        DType::MXFP4,
    ] {
        let n = 4 * PARALLEL_MIN_ELEMS + 2 * 256;
        let bytes: Vec<u8> = (0..bytes_for(dtype, n).unwrap())
            .map(|i| (i as u32).wrapping_mul(2654435761).rotate_right(13) as u8)
            .collect();
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        dequantize(dtype, &bytes, &mut a).unwrap();
        dequantize_row(dtype, &bytes, &mut b).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| same(*x, *y)), "{dtype}");
    }
}

#[test]
fn plain_types() {
    let mut out = [0f32; 3];
    dequantize(DType::I8, &[0xff, 0x7f, 0x80], &mut out).unwrap();
    assert_eq!(out, [-1.0, 127.0, -128.0]);
    let src: Vec<u8> = [-2i16, 300, i16::MIN]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    dequantize(DType::I16, &src, &mut out).unwrap();
    assert_eq!(out, [-2.0, 300.0, -32768.0]);
    let src: Vec<u8> = [1.5f64, -1e300, 0.1]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    dequantize(DType::F64, &src, &mut out).unwrap();
    assert_eq!(out, [1.5, f32::NEG_INFINITY, 0.1f64 as f32]);
    // bf16 subnormal stays an f32 subnormal.
    let mut one = [0f32];
    dequantize(DType::BF16, &[0x01, 0x00], &mut one).unwrap();
    assert_eq!(one[0].to_bits(), 0x0001_0000);
}
