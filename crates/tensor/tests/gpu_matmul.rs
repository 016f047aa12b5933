//! GPU matmul for every weight format against the scalar reference on the CPU-dequantized
//! weight: both shader paths (matvec for a few x rows, one invocation per weight row above
//! that), odd shapes, several blocks along k, the binding-split path, and `supports()`
//! agreeing with what runs.
//!
//! One device per test binary; without an adapter each test prints `SKIPPED (no adapter)`
//! (or fails under `MTMD_REQUIRE_GPU=1`). `MTMD_GPU_REPORT=1` prints every NMSE.
#![cfg(feature = "gpu")]

use std::time::Instant;

use proptest::prelude::*;
use tensor::gpu::{GpuContext, ops};
use tensor::ops::matmul;
use tensor::{DType, Storage, Tensor, TensorError};

mod gpu_support;
use gpu_support::*;

/// Quantized formats the GPU matmul decodes, the two real models' first.
const QUANT_TYPES: [DType; 12] = [
    DType::Q4K,
    DType::Q5_0,
    DType::Q6K,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_1,
    DType::Q2K,
    DType::Q3K,
    DType::Q5K,
    DType::IQ4NL,
    DType::IQ4XS,
];

const FLOAT_TYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Byte offsets of the f16 scale fields (d, and dmin / m where present) inside one block.
fn scale_offsets(t: DType) -> &'static [usize] {
    match t {
        DType::Q4_0 | DType::Q5_0 | DType::Q8_0 | DType::IQ4NL | DType::IQ4XS => &[0],
        DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q2K => &[80, 82],
        DType::Q3K => &[108],
        DType::Q6K => &[208],
        other => panic!("no scale layout for {other}"),
    }
}

/// Random blocks: every bit random except the f16 scales, which get a random sign and a
/// magnitude in [1e-3, 0.1] (finite, so every unpacking path runs on sane values).
fn random_blocks(t: DType, n_blocks: usize, seed: u64) -> Vec<u8> {
    let size = t.type_size();
    let mut raw = bytes(seed, n_blocks * size);
    let offsets = scale_offsets(t);
    let mags = values(seed + 1, n_blocks * offsets.len(), 1.0);
    for (b, block) in raw.chunks_exact_mut(size).enumerate() {
        for (i, &off) in offsets.iter().enumerate() {
            let u = mags[b * offsets.len() + i];
            let v = 10f32.powf(-1.0 - 2.0 * u.abs()).copysign(u);
            block[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    raw
}

/// The stored bytes of an `m`×`k` weight of `dtype`.
fn weight_bytes(dtype: DType, seed: u64, m: usize, k: usize) -> Vec<u8> {
    let v = || values(seed, m * k, 1.0);
    match dtype {
        DType::F32 => bytemuck::cast_slice(&v()).to_vec(),
        DType::F16 => v()
            .into_iter()
            .flat_map(|x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        DType::BF16 => v()
            .into_iter()
            .flat_map(|x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        t => random_blocks(t, m * k / t.block_size(), seed),
    }
}

/// A weight of `dtype` on the GPU and its values as the CPU dequantizer reads them.
fn weight(ctx: &GpuContext, dtype: DType, seed: u64, m: usize, k: usize) -> (Tensor, Vec<f32>) {
    let raw = weight_bytes(dtype, seed, m, k);
    let t = Tensor::new(
        dtype,
        &[m, k],
        Storage::Host(tensor::HostBytes::from_bytes(&raw)),
    )
    .unwrap();
    let deq = t.to_f32_vec().unwrap();
    assert!(deq.iter().all(|v| v.is_finite()), "{dtype}: test weight");
    (t.to_gpu(ctx).unwrap(), deq)
}

fn run_matmul(ctx: &GpuContext, dtype: DType, seed: u64, n: usize, k: usize, m: usize) {
    let (w, w_f32) = weight(ctx, dtype, seed, m, k);
    let x = values(seed + 2, n * k, 1.0);
    let got = host(&ops::matmul(&on_gpu(ctx, &[n, k], &x), &w).unwrap());
    let mut want = vec![0f32; n * m];
    matmul::reference(&w_f32, &x, n, k, m, &mut want);
    assert!(
        want.iter().any(|v| *v != 0.0),
        "{dtype}: degenerate test weight"
    );
    check(&format!("matmul {dtype} n={n} k={k} m={m}"), &got, &want);
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    /// Any k; n up to 4 takes the matvec path, above it the row path.
    #[test]
    fn matmul_float_weights_match_reference(
        n_vec in 1usize..=4, n_rows in 5usize..40, k in 1usize..200, m in 1usize..100, seed: u64,
    ) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        for dtype in FLOAT_TYPES {
            run_matmul(&ctx, dtype, seed, n_vec, k, m);
            run_matmul(&ctx, dtype, seed, n_rows, k, m);
        }
    }

    #[test]
    fn matmul_quantized_weights_match_reference(
        n_vec in 1usize..=4, n_rows in 5usize..40, blocks in 1usize..4, m in 1usize..70, seed: u64,
    ) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        for dtype in QUANT_TYPES {
            // Legacy formats get more blocks, so k spans several 32-blocks either way.
            let k = dtype.block_size() * if dtype.block_size() == 32 { 3 * blocks } else { blocks };
            run_matmul(&ctx, dtype, seed, n_vec, k, m);
            run_matmul(&ctx, dtype, seed, n_rows, k, m);
        }
    }
}

/// The fused epilogue (`ops::linear`: bias and activation inside the matmul) against the CPU's
/// matmul, bias add and activation, through `Exec::linear`, on both shader paths and under a
/// binding limit that splits the weight (the bias is indexed by output column, not chunk row).
#[test]
fn linear_epilogue_matches_the_unfused_cpu_ops() {
    use tensor::exec::{CpuExec, Exec, GpuExec, Unary};
    let Some(full) = gpu_or_skip() else { return };
    for (ctx, n, dtype) in [
        (full.clone(), 1, DType::F16),
        (full.clone(), 37, DType::Q8_0),
        (
            std::sync::Arc::new(full.with_binding_limit(4096)),
            9,
            DType::Q4K,
        ),
    ] {
        let gpu = GpuExec::new(ctx.clone());
        let (m, k) = (45, 512);
        let (w, w_f32) = weight(&ctx, dtype, 5, m, k);
        let w_host = Tensor::from_f32(&[m, k], &w_f32).unwrap();
        let x = values(6, n * k, 1.0);
        let b = values(7, m, 0.5);
        for act in [
            None,
            Some(Unary::GeluTanh),
            Some(Unary::GeluErf),
            Some(Unary::GeluQuick),
            Some(Unary::Silu),
        ] {
            for bias in [false, true] {
                let mut want = vec![0f32; n * m];
                let b_cpu = bias.then(|| b.clone());
                CpuExec
                    .linear(&w_host, b_cpu.as_ref(), act, &x, n, &mut want)
                    .unwrap();
                let b_gpu = bias.then(|| gpu.vector(&b).unwrap());
                let mut got = gpu.alloc(n * m).unwrap();
                gpu.linear(
                    &w,
                    b_gpu.as_ref(),
                    act,
                    &gpu.upload(&x).unwrap(),
                    n,
                    &mut got,
                )
                .unwrap();
                check(
                    &format!("linear {dtype} n={n} bias={bias} {act:?}"),
                    &gpu.download(got).unwrap(),
                    &want,
                );
            }
        }
    }
}

/// n = 1 exactly, for every format: the decode-one-token case.
#[test]
fn matvec_of_one_row_matches_reference_for_every_type() {
    let Some(ctx) = gpu_or_skip() else { return };
    for dtype in QUANT_TYPES {
        run_matmul(&ctx, dtype, 3, 1, 512, 33);
    }
    for dtype in FLOAT_TYPES {
        run_matmul(&ctx, dtype, 3, 1, 515, 33);
    }
}

#[test]
fn matmul_splits_under_a_small_binding_limit() {
    let Some(full) = gpu_or_skip() else { return };
    // K-quant rows are whole 256-blocks (two per row here: 288 to 420 bytes); the limit holds
    // a few rows, so weights, x and the output are all cut into several chunks.
    let ctx = full.with_binding_limit(4096);
    for dtype in [DType::Q4K, DType::Q6K, DType::Q5_0, DType::Q8_0, DType::F16] {
        for n in [1, 3, 37] {
            run_matmul(&ctx, dtype, 11, n, 512, 45);
        }
    }
    // A row wider than the limit is an error, not a wrong answer.
    let tiny = full.with_binding_limit(256);
    let (w, _) = weight(&tiny, DType::Q4K, 1, 2, 512);
    let x = on_gpu(&tiny, &[1, 512], &values(2, 512, 1.0));
    assert!(ops::matmul(&x, &w).is_err());
}

/// `supports` says true exactly for the weight formats that run.
#[test]
fn supports_agrees_with_what_runs() {
    let Some(ctx) = gpu_or_skip() else { return };
    let (m, k) = (3, 256);
    let x = on_gpu(&ctx, &[2, k], &values(1, 2 * k, 1.0));
    for &dtype in DType::ALL {
        let n_bytes = dtype.row_bytes((m * k) as u64).unwrap() as usize;
        let w = Tensor::new(
            dtype,
            &[m, k],
            Storage::Host(tensor::HostBytes::from_bytes(&vec![0u8; n_bytes])),
        )
        .unwrap()
        .to_gpu(&ctx)
        .unwrap();
        let result = ops::matmul(&x, &w);
        if ops::supports(ops::GpuOp::Matmul, dtype) {
            assert!(result.is_ok(), "{dtype}: supported but {:?}", result.err());
        } else {
            assert!(
                matches!(result, Err(TensorError::Unsupported { .. })),
                "{dtype}: unsupported but {:?}",
                result.map(|_| ())
            );
        }
    }
    for dtype in QUANT_TYPES.iter().chain(&FLOAT_TYPES) {
        assert!(ops::supports(ops::GpuOp::Matmul, *dtype), "{dtype}");
    }
}

/// One rough timing of the decode case (not asserted): n = 1 against 4096×1024 Q4_K (both
/// ways round), next to n = 5 on the per-row path.
#[test]
fn matvec_q4k_timing() {
    let Some(ctx) = gpu_or_skip() else { return };
    for (m, k) in [(4096, 1024), (1024, 4096)] {
        let (w, _) = weight(&ctx, DType::Q4K, 5, m, k);
        for n in [1, 5] {
            let x = on_gpu(&ctx, &[n, k], &values(6, n * k, 1.0));
            // The first call builds the pipeline.
            host(&ops::matmul(&x, &w).unwrap());
            let reps = 5;
            let t0 = Instant::now();
            for _ in 0..reps {
                host(&ops::matmul(&x, &w).unwrap());
            }
            let ms = t0.elapsed().as_secs_f64() * 1e3 / reps as f64;
            println!(
                "TIMING Q4_K m={m} k={k} n={n}: {ms:.2} ms per matmul (incl. upload, readback)"
            );
        }
    }
}

/// A 178 MB Q6_K weight (an output matrix) over the device's real binding limit (128 MiB on
/// lavapipe): split in whole rows. Checked on a sample of rows, the CPU reference of the whole
/// matrix being 700 MB of f32.
#[test]
fn weight_over_the_real_binding_limit_is_split() {
    let Some(ctx) = gpu_or_skip() else { return };
    let (m, k) = (85_000, 2560);
    let dtype = DType::Q6K;
    let row_bytes = dtype.row_bytes(k as u64).unwrap() as usize;
    let raw = random_blocks(dtype, m * k / dtype.block_size(), 21);
    assert!(
        raw.len() as u64 > ctx.binding_limit(),
        "{} bytes",
        raw.len()
    );
    let w = Tensor::new(
        dtype,
        &[m, k],
        Storage::Host(tensor::HostBytes::from_bytes(&raw)),
    )
    .unwrap()
    .to_gpu(&ctx)
    .unwrap();
    let rows: Vec<usize> = (0..m).step_by(997).chain(m - 3..m).collect();
    let mut w_rows = vec![0f32; rows.len() * k];
    for (r, &j) in rows.iter().enumerate() {
        let src = &raw[j * row_bytes..(j + 1) * row_bytes];
        tensor::quant::dequantize_row(dtype, src, &mut w_rows[r * k..(r + 1) * k]).unwrap();
    }
    for n in [1, 5] {
        let x = values(22, n * k, 1.0);
        let got = host(&ops::matmul(&on_gpu(&ctx, &[n, k], &x), &w).unwrap());
        let mut want = vec![0f32; n * rows.len()];
        matmul::reference(&w_rows, &x, n, k, rows.len(), &mut want);
        let got: Vec<f32> = (0..n)
            .flat_map(|i| rows.iter().map(move |&j| (i, j)))
            .map(|(i, j)| got[i * m + j])
            .collect();
        check(
            &format!("matmul {dtype} {m}x{k} n={n} (sampled rows)"),
            &got,
            &want,
        );
    }
}
