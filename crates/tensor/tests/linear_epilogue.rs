//! An encoder's linear layer with its bias and activation fused into the GEMM's epilogue
//! (`cpu::linear_wide`) gives exactly the values of the matmul followed by the two separate
//! passes, on the GEMM's path (threaded blocks, partial row panels, partial column panels)
//! and on the others (few rows, a quantized weight).

use half::f16;
use tensor::cpu::{self, Act, Epilogue};
use tensor::{DType, HostBytes, Storage, Tensor};

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(seed.wrapping_mul(97));
            ((h >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

fn f16_weight(m: usize, k: usize) -> Tensor {
    let w: Vec<f16> = data(m * k, 3).iter().map(|&v| f16::from_f32(v)).collect();
    let bytes = HostBytes::from_bytes(bytemuck::cast_slice(&w));
    Tensor::new(DType::F16, &[m, k], Storage::Host(bytes)).unwrap()
}

fn separate(w: &Tensor, x: &[f32], n: usize, m: usize, epi: Epilogue) -> Vec<f32> {
    let mut out = vec![0f32; n * m];
    cpu::matmul_wide(w, x, n, &mut out).unwrap();
    if let Some(b) = epi.bias {
        cpu::add_rows(&mut out, b);
    }
    match epi.act {
        Some(Act::GeluTanh) => cpu::gelu_tanh(&mut out),
        Some(Act::GeluErf) => cpu::gelu_erf(&mut out),
        Some(Act::GeluQuick) => cpu::gelu_quick(&mut out),
        Some(Act::Silu) => cpu::silu(&mut out),
        None => {}
    }
    out
}

#[test]
fn fused_epilogue_equals_separate_passes() {
    // (rows, k, output columns): the GEMM with edge panels both ways, and a few-row input.
    for (n, k, m) in [(301, 96, 300), (64, 64, 256), (97, 40, 70), (3, 32, 50)] {
        let w = f16_weight(m, k);
        let x = data(n * k, 1);
        let bias = data(m, 2);
        for act in [
            None,
            Some(Act::GeluTanh),
            Some(Act::GeluErf),
            Some(Act::GeluQuick),
            Some(Act::Silu),
        ] {
            for with_bias in [false, true] {
                let epi = Epilogue {
                    bias: with_bias.then_some(bias.as_slice()),
                    act,
                };
                let mut fused = vec![f32::NAN; n * m];
                cpu::linear_wide(&w, &x, n, &mut fused, epi).unwrap();
                let want = separate(&w, &x, n, m, epi);
                let same = fused
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{n}x{k}x{m} {act:?} bias {with_bias}");
            }
        }
    }
}

#[test]
fn a_bias_of_the_wrong_length_is_an_error() {
    let w = f16_weight(8, 32);
    let x = data(32, 1);
    let mut out = vec![0f32; 8];
    let bias = [0f32; 7];
    let epi = Epilogue {
        bias: Some(&bias),
        act: None,
    };
    assert!(cpu::linear_wide(&w, &x, 1, &mut out, epi).is_err());
}
