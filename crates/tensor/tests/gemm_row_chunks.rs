//! A GEMM whose packed x is too big for the last-level cache runs in chunks of rows (see
//! `cpu::gemm`); every output is still one FMA chain over `k` in order, so each row equals,
//! bit for bit, the same row computed in a batch small enough to run whole, across the
//! chunk boundary too.

use half::f16;
use tensor::cpu;
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

#[test]
fn rows_of_a_chunked_gemm_equal_the_same_rows_run_whole() {
    // 3500 x 2048 floats of x: 28.7 MB packed, two chunks of 1752 rows.
    let (n, k, m) = (3500, 2048, 80);
    let w: Vec<f16> = data(m * k, 3).iter().map(|&v| f16::from_f32(v)).collect();
    let w = Tensor::new(
        DType::F16,
        &[m, k],
        Storage::Host(HostBytes::from_bytes(bytemuck::cast_slice(&w))),
    )
    .unwrap();
    let x = data(n * k, 1);
    let mut all = vec![0f32; n * m];
    cpu::matmul_wide(&w, &x, n, &mut all).unwrap();
    let (r0, r1) = (1200, 2300);
    let mut part = vec![0f32; (r1 - r0) * m];
    cpu::matmul_wide(&w, &x[r0 * k..r1 * k], r1 - r0, &mut part).unwrap();
    let differ = part
        .iter()
        .zip(&all[r0 * m..r1 * m])
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} outputs differ", part.len());
}
