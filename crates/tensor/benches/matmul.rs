//! Float matmul throughput: `tensor::cpu::matmul` against the `gemm` crate (yardstick) on
//! the same shapes. `out[n, m] = x[n, k] · w[m, k]ᵀ`, m = k = 2048, n = 1 (decode, GEMV)
//! and n = 512 (prompt, GEMM). Throughput is reported as 2·m·n·k flops ("elements").
//!
//! Run: `cargo bench -p tensor --bench matmul -- --warm-up-time 1 --measurement-time 3`

// The gemm crate's entry point is an unsafe fn over raw pointers.
#![allow(unsafe_code)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use tensor::{DType, HostBytes, Storage, Tensor};

const M: usize = 2048;
const K: usize = 2048;

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 1999) as f32 / 1999.0 - 0.5)
        .collect()
}

/// The gemm crate's row-major `dst[n, m] = lhs[n, k] · rhs`, with `rhs` read as wᵀ
/// (element (p, j) at `w[j * k + p]`).
fn yardstick<T: 'static + Copy>(w: &[T], x: &[T], n: usize, out: &mut [T], one: T, zero: T) {
    // SAFETY: every pointer/stride pair stays inside its slice: dst n·m, lhs n·k, rhs m·k.
    unsafe {
        gemm::gemm(
            n,
            M,
            K,
            out.as_mut_ptr(),
            1,
            M as isize,
            false,
            x.as_ptr(),
            1,
            K as isize,
            w.as_ptr(),
            K as isize,
            1,
            zero,
            one,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

fn bench(c: &mut Criterion) {
    let w32 = data(M * K, 1);
    let w16: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
    let t32 = Tensor::new(
        DType::F32,
        &[M, K],
        Storage::Host(HostBytes::from_f32(&w32)),
    )
    .unwrap();
    let t16 = Tensor::new(
        DType::F16,
        &[M, K],
        Storage::Host(HostBytes::from_bytes(bytemuck::cast_slice(&w16))),
    )
    .unwrap();

    for n in [1usize, 512] {
        let x = data(n * K, 2);
        let x16: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
        let mut out = vec![0f32; n * M];
        let mut out16 = vec![f16::ZERO; n * M];

        let mut g = c.benchmark_group(format!("matmul_{M}x{K}_n{n}"));
        g.throughput(Throughput::Elements((2 * M * n * K) as u64));
        g.bench_function(BenchmarkId::new("ours", "f32"), |b| {
            b.iter(|| tensor::cpu::matmul(&t32, &x, n, &mut out).unwrap())
        });
        g.bench_function(BenchmarkId::new("gemm", "f32"), |b| {
            b.iter(|| yardstick(&w32, &x, n, &mut out, 1.0, 0.0))
        });
        g.bench_function(BenchmarkId::new("ours", "f16"), |b| {
            b.iter(|| tensor::cpu::matmul(&t16, &x, n, &mut out).unwrap())
        });
        g.bench_function(BenchmarkId::new("gemm", "f16"), |b| {
            b.iter(|| yardstick(&w16, &x16, n, &mut out16, f16::ONE, f16::ZERO))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
