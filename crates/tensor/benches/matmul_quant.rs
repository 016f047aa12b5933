//! Quantized matmul throughput: 2048x2048 weights times 1 column (GEMV, token generation) and
//! times 512 columns (GEMM, prompt processing).
//!
//! GEMV reports bytes/s of weight data read (the bound is memory bandwidth); GEMM reports
//! elements/s where one element is one FLOP (throughput = 2*m*n*k), i.e. "Gelem/s" = GFLOP/s.
//! Run: `cargo bench -p tensor --bench matmul_quant -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tensor::quant::dot::{Isa, matmul_quant_with};
use tensor::{DType, HostBytes, Storage, Tensor};

const M: usize = 2048;
const K: usize = 2048;

/// Random blocks with small finite f16 scales (deterministic xorshift).
fn random_weight(t: DType) -> Tensor {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let size = t.type_size();
    let mut bytes: Vec<u8> = (0..M * K / t.block_size() * size)
        .map(|_| next() as u8)
        .collect();
    let scale_at: &[usize] = match t {
        DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q6K => &[208],
        _ => &[0],
    };
    for block in bytes.chunks_exact_mut(size) {
        for &off in scale_at {
            block[off..off + 2].copy_from_slice(&half::f16::from_f32(0.01).to_le_bytes());
        }
    }
    Tensor::new(t, &[M, K], Storage::Host(HostBytes::from_bytes(&bytes))).unwrap()
}

fn bench(c: &mut Criterion) {
    let isa = Isa::detected();
    let types = [DType::Q3K, DType::Q4K, DType::Q6K, DType::Q8_0, DType::Q5_0];
    let mut group = c.benchmark_group(format!("matmul_quant_gemv_{isa:?}"));
    for t in types {
        let w = random_weight(t);
        let x: Vec<f32> = (0..K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let mut out = vec![0f32; M];
        group.throughput(Throughput::Bytes(w.host_bytes().unwrap().len() as u64));
        group.bench_function(BenchmarkId::new(t.name(), "n1"), |b| {
            b.iter(|| matmul_quant_with(isa, black_box(&w), black_box(&x), 1, &mut out).unwrap())
        });
    }
    group.finish();

    let n = 512;
    let mut group = c.benchmark_group(format!("matmul_quant_gemm_{isa:?}"));
    group.sample_size(10);
    for t in types {
        let w = random_weight(t);
        let x: Vec<f32> = (0..n * K)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let mut out = vec![0f32; n * M];
        group.throughput(Throughput::Elements((2 * M * n * K) as u64));
        group.bench_function(BenchmarkId::new(t.name(), format!("n{n}")), |b| {
            b.iter(|| matmul_quant_with(isa, black_box(&w), black_box(&x), n, &mut out).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
