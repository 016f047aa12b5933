//! Quantized matmul (`tensor::quant::dot`): every SIMD level against the scalar reference,
//! and the reference against f32 matmuls of the dequantized operands.

use proptest::prelude::*;
use tensor::quant::dequantize;
use tensor::quant::dot::{
    Isa, LEVELS, SUPPORTED_TYPES, activation_type, matmul_quant, matmul_quant_acts,
    matmul_quant_with, quantize_activations, quantize_activations_with, vec_dot_with,
};
use tensor::{DType, HostBytes, Storage, Tensor, TensorError};
use testkit::nmse;

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal: sum of uniforms.
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.f32()).sum::<f32>() - 2.0
    }
}

/// Byte offsets of the f16 scale fields (d, dmin / m) in each block.
fn scale_offsets(t: DType) -> &'static [usize] {
    match t {
        DType::Q4_0
        | DType::Q5_0
        | DType::Q8_0
        | DType::IQ4NL
        | DType::IQ4XS
        | DType::IQ2XXS
        | DType::IQ2XS
        | DType::IQ2S
        | DType::IQ3XXS
        | DType::IQ3S
        | DType::IQ1S => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q2K => &[80, 82],
        DType::Q3K => &[108],
        DType::Q6K => &[208],
        DType::TQ1_0 => &[52],
        DType::TQ2_0 => &[64],
        // Scales that are not plain f16 fields: handled in `random_blocks`.
        DType::IQ1M | DType::MXFP4 => &[],
        other => panic!("no scale layout for {other}"),
    }
}

/// Random blocks: every bit random except the f16 scales, which get |x| in [1e-3, 1] with a
/// random sign (so all unpacking paths run and values stay finite).
fn random_blocks(t: DType, n_blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let size = t.type_size();
    let mut bytes: Vec<u8> = (0..n_blocks * size).map(|_| rng.next() as u8).collect();
    for block in bytes.chunks_exact_mut(size) {
        for &off in scale_offsets(t) {
            let mag = 10f32.powf(-3.0 * rng.f32());
            let v = if rng.next() & 1 == 0 { mag } else { -mag };
            block[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
        match t {
            // The f16 scale is spread over the top nibbles of the four u16 scale words.
            DType::IQ1M => {
                let bits = half::f16::from_f32(0.001 + rng.f32()).to_bits();
                for i in 0..4 {
                    let at = 48 + 2 * i + 1;
                    block[at] = (block[at] & 0x0F) | ((((bits >> (4 * i)) & 0x0F) as u8) << 4);
                }
            }
            // E8M0 exponent near 2^0.
            DType::MXFP4 => block[0] = 118 + (rng.next() % 20) as u8,
            _ => {}
        }
    }
    bytes
}

fn weight_tensor(t: DType, m: usize, k: usize, rng: &mut Rng) -> Tensor {
    let bytes = random_blocks(t, m * k / t.block_size(), rng);
    Tensor::new(t, &[m, k], Storage::Host(HostBytes::from_bytes(&bytes))).unwrap()
}

fn activations(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.normal()).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// f64 reference `out[c][r] = sum_i x[c][i] * w[r][i]`.
fn matmul_f64(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    for c in 0..n {
        for r in 0..m {
            let s: f64 = (0..k)
                .map(|i| f64::from(x[c * k + i]) * f64::from(w[r * k + i]))
                .sum();
            out[c * m + r] = s as f32;
        }
    }
    out
}

fn simd_levels() -> Vec<Isa> {
    // Every level with its own kernels (plain AVX-512 runs the AVX2 ones).
    tensor::isa::test_levels(&LEVELS[1..], "quantized SIMD comparisons")
}

#[test]
fn activation_quantizers_are_bit_identical_across_levels() {
    let mut rng = Rng(7);
    let mut x = activations(8 * 512, &mut rng);
    // Ties and exact magnitudes: rounding must agree everywhere.
    for (i, v) in x.iter_mut().enumerate().take(300) {
        *v = (i as f32 - 150.0) * 0.5;
    }
    x[1000..1032].fill(0.0);
    // Non-finite inputs must not make the levels disagree either.
    x[2000] = f32::NAN;
    x[2100] = f32::INFINITY;
    x[2600] = f32::NEG_INFINITY;
    for act in [DType::Q8_0, DType::Q8_1, DType::Q8K] {
        let reference = quantize_activations_with(Isa::Scalar, act, &x, 8).unwrap();
        for isa in simd_levels() {
            let got = quantize_activations_with(isa, act, &x, 8).unwrap();
            assert_eq!(got.as_bytes(), reference.as_bytes(), "{act} with {isa:?}");
        }
    }
}

#[test]
fn simd_dot_products_match_the_scalar_reference() {
    let mut rng = Rng(11);
    for &t in SUPPORTED_TYPES {
        let k = 8 * 256;
        let act = activation_type(t).unwrap();
        let mut scalar = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..24 {
            let w = random_blocks(t, k / t.block_size(), &mut rng);
            let a =
                quantize_activations_with(Isa::Scalar, act, &activations(k, &mut rng), 1).unwrap();
            scalar.push(vec_dot_with(Isa::Scalar, t, &w, a.row(0)).unwrap());
            rows.push((w, a));
        }
        for isa in simd_levels() {
            let got: Vec<f32> = rows
                .iter()
                .map(|(w, a)| vec_dot_with(isa, t, w, a.row(0)).unwrap())
                .collect();
            let e = nmse(&got, &scalar);
            println!(
                "{t:>6} {isa:?}: nmse {e:.2e} max abs {:.2e}",
                max_abs(&got, &scalar)
            );
            assert!(e <= 1e-7, "{t} {isa:?}: nmse {e:e}");
        }
    }
}

/// The scalar reference equals an f64 matmul of the dequantized weights and the dequantized
/// quantized activations up to f32 rounding: the integer sums isolate weight rounding.
#[test]
fn reference_matches_dequantized_operands() {
    let mut rng = Rng(23);
    let (m, n, k) = (19, 5, 512);
    for &t in SUPPORTED_TYPES {
        let w = weight_tensor(t, m, k, &mut rng);
        let x = activations(n * k, &mut rng);
        let mut out = vec![0f32; n * m];
        matmul_quant_with(Isa::Scalar, &w, &x, n, &mut out).unwrap();

        let mut wf = vec![0f32; m * k];
        dequantize(t, w.host_bytes().unwrap(), &mut wf).unwrap();
        let xq =
            quantize_activations_with(Isa::Scalar, activation_type(t).unwrap(), &x, n).unwrap();
        let expected = matmul_f64(&wf, &xq.dequantize(), m, n, k);
        let e = nmse(&out, &expected);
        // Q4_1 / Q5_1 use Q8_1's f16-rounded `s = d * sum(q)` for the min term.
        let tol = if matches!(t, DType::Q4_1 | DType::Q5_1) {
            1e-5
        } else {
            1e-9
        };
        println!("{t:>6}: nmse vs dequantized operands {e:.2e}");
        assert!(e <= tol, "{t}: nmse {e:e}");

        // Against the unquantized activations only the 8-bit activation error remains.
        let plain = matmul_f64(&wf, &x, m, n, k);
        let e = nmse(&out, &plain);
        println!("{t:>6}: nmse vs f32 activations {e:.2e}");
        assert!(e <= 1e-3, "{t}: nmse vs f32 activations {e:e}");
    }
}

#[test]
fn every_level_matches_the_reference_on_gemm_and_gemv_shapes() {
    let mut rng = Rng(31);
    for &t in SUPPORTED_TYPES {
        // m not a multiple of the 16-row panel, n not a multiple of the 8-column tile.
        for &(m, n) in &[(37, 1), (37, 3), (53, 13)] {
            let k = 1024;
            let w = weight_tensor(t, m, k, &mut rng);
            let x = activations(n * k, &mut rng);
            let mut reference = vec![0f32; n * m];
            matmul_quant_with(Isa::Scalar, &w, &x, n, &mut reference).unwrap();
            for isa in simd_levels() {
                let mut out = vec![f32::NAN; n * m];
                matmul_quant_with(isa, &w, &x, n, &mut out).unwrap();
                let e = nmse(&out, &reference);
                assert!(e <= 1e-7, "{t} {isa:?} m={m} n={n}: nmse {e:e}");
            }
        }
    }
}

#[test]
fn errors_are_typed() {
    let mut rng = Rng(5);
    let w = weight_tensor(DType::Q4K, 4, 256, &mut rng);
    let mut out = vec![0f32; 4];
    assert!(matches!(
        matmul_quant(&w, &[0.0; 100], 1, &mut out),
        Err(TensorError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        matmul_quant(&w, &[0.0; 256], 1, &mut [0.0; 3]),
        Err(TensorError::ShapeMismatch { .. })
    ));
    let f = Tensor::from_f32(&[2, 32], &[0.0; 64]).unwrap();
    assert!(matches!(
        matmul_quant(&f, &[0.0; 32], 1, &mut [0.0; 2]),
        Err(TensorError::Unsupported { .. })
    ));
    let nvfp4 = Tensor::zeros(DType::NVFP4, &[2, 256]).unwrap();
    assert!(matches!(
        matmul_quant(&nvfp4, &[0.0; 256], 1, &mut [0.0; 2]),
        Err(TensorError::Unsupported { .. })
    ));
    assert!(vec_dot_with(Isa::Scalar, DType::Q4K, &[0; 144], &[0; 10]).is_err());
    // Zero-sized inputs are fine.
    matmul_quant(&w, &[], 0, &mut []).unwrap();
}

#[test]
fn prequantized_activations_give_the_same_result() {
    let mut rng = Rng(41);
    for &t in SUPPORTED_TYPES {
        let (m, n, k) = (24, 9, 512);
        let w = weight_tensor(t, m, k, &mut rng);
        let x = activations(n * k, &mut rng);
        let mut direct = vec![0f32; n * m];
        matmul_quant(&w, &x, n, &mut direct).unwrap();
        let acts = quantize_activations(activation_type(t).unwrap(), &x, n).unwrap();
        let mut via_acts = vec![0f32; n * m];
        matmul_quant_acts(&w, &acts, &mut via_acts).unwrap();
        assert_eq!(direct, via_acts, "{t}");
    }
    // Activations of the wrong format or length are refused.
    let w = weight_tensor(DType::Q4K, 4, 512, &mut rng);
    let q8_0 = quantize_activations(DType::Q8_0, &[0.5; 512], 1).unwrap();
    assert!(matches!(
        matmul_quant_acts(&w, &q8_0, &mut [0.0; 4]),
        Err(TensorError::ShapeMismatch { .. })
    ));
    let short = quantize_activations(DType::Q8K, &[0.5; 256], 1).unwrap();
    assert!(matmul_quant_acts(&w, &short, &mut [0.0; 4]).is_err());
}

#[test]
fn zero_weights_and_activations_give_zero() {
    for &t in SUPPORTED_TYPES {
        let w = Tensor::zeros(t, &[17, 512]).unwrap();
        let mut out = vec![1f32; 9 * 17];
        matmul_quant(&w, &vec![0.5; 9 * 512], 9, &mut out).unwrap();
        assert!(out.iter().all(|&v| v == 0.0), "{t}");
    }
}

/// Every quantized tensor of the llama.cpp fixture (random blocks with edge-case scales:
/// signed zeros, f16 subnormals, +-65504): every level matches the scalar reference, and the
/// reference matches the fixture's dequantized values times the dequantized activations.
#[test]
fn fixture_tensors_match_the_reference() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/quants/quants.gguf"
    );
    let file = gguf::GgufFile::open(path).unwrap();
    let mut rng = Rng(97);
    let mut checked = 0;
    for info in file.tensors() {
        let t = info.ggml_type;
        if !SUPPORTED_TYPES.contains(&t) {
            continue;
        }
        let w = Tensor::from_mapped(t, &info.shape(), file.tensor_data(info)).unwrap();
        // MXFP4's edge-case exponents (up to 2^124) overflow f32 products: skip those tensors.
        let wf = w.to_f32_vec().unwrap();
        if wf.iter().any(|v| v.abs() > 1e30) {
            println!("{}: skipped (scales near f32 overflow)", info.name);
            continue;
        }
        let k = w.dim(-1);
        let m = w.numel() / k;
        let n = 7;
        let x = activations(n * k, &mut rng);
        let mut reference = vec![0f32; n * m];
        matmul_quant_with(Isa::Scalar, &w, &x, n, &mut reference).unwrap();
        for isa in simd_levels() {
            for cols in [1, n] {
                let mut out = vec![f32::NAN; cols * m];
                matmul_quant_with(isa, &w, &x[..cols * k], cols, &mut out).unwrap();
                let e = nmse(&out, &reference[..cols * m]);
                assert!(e <= 1e-7, "{} {isa:?} n={cols}: nmse {e:e}", info.name);
            }
        }
        let xq =
            quantize_activations_with(Isa::Scalar, activation_type(t).unwrap(), &x, n).unwrap();
        let e = nmse(&reference, &matmul_f64(&wf, &xq.dequantize(), m, n, k));
        let tol = if matches!(t, DType::Q4_1 | DType::Q5_1) {
            1e-5
        } else {
            1e-9
        };
        assert!(
            e <= tol,
            "{}: nmse vs dequantized operands {e:e}",
            info.name
        );
        checked += 1;
    }
    println!("{checked} fixture tensors checked");
    assert!(
        checked >= 2 * 15,
        "expected the fixture's quantized tensors, checked {checked}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn random_shapes_match_the_reference(
        type_index in 0..SUPPORTED_TYPES.len(),
        m in 1usize..40,
        n in 1usize..21,
        blocks in 1usize..5,
        seed in 1u64..u64::MAX,
    ) {
        let t = SUPPORTED_TYPES[type_index];
        let k = blocks * t.block_size().max(activation_type(t).unwrap().block_size());
        let mut rng = Rng(seed);
        let w = weight_tensor(t, m, k, &mut rng);
        let x = activations(n * k, &mut rng);
        let mut reference = vec![0f32; n * m];
        matmul_quant_with(Isa::Scalar, &w, &x, n, &mut reference).unwrap();
        for isa in std::iter::once(Isa::Scalar).chain(simd_levels()) {
            let mut out = vec![f32::NAN; n * m];
            matmul_quant_with(isa, &w, &x, n, &mut out).unwrap();
            let e = nmse(&out, &reference);
            prop_assert!(e <= 1e-7, "{} {:?} m={} n={} k={}: nmse {:e}", t, isa, m, n, k, e);
        }
    }
}
