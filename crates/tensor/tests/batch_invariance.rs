//! Batch invariance of the CPU kernels: a token's result is bit-identical whatever else is in
//! its batch (quantized and float matmul: row i of `matmul(x[a..b])` equals `matmul(x[i])`),
//! at every instruction-set level this CPU runs.

use proptest::prelude::*;
use tensor::cpu::{Isa, with_isa};
use tensor::quant::dot::matmul_quant_with;
use tensor::{DType, HostBytes, Storage, Tensor};

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
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| self.f32()).sum::<f32>() - 2.0
    }
}

/// The weight types the real models use.
const QUANT_TYPES: [DType; 12] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
    DType::IQ4NL,
    DType::IQ4XS,
];

/// Byte offsets of the f16 scale fields of a block.
fn scale_offsets(t: DType) -> &'static [usize] {
    match t {
        DType::Q4_1 | DType::Q5_1 | DType::Q4K | DType::Q5K => &[0, 2],
        DType::Q2K => &[80, 82],
        DType::Q3K => &[108],
        DType::Q6K => &[208],
        _ => &[0],
    }
}

/// Random blocks with finite f16 scales of random sign and magnitude in [1e-3, 1].
fn quant_weight(t: DType, m: usize, k: usize, rng: &mut Rng) -> Tensor {
    let size = t.type_size();
    let mut bytes: Vec<u8> = (0..m * k / t.block_size() * size)
        .map(|_| rng.next() as u8)
        .collect();
    for block in bytes.chunks_exact_mut(size) {
        for &off in scale_offsets(t) {
            let mag = 10f32.powf(-3.0 * rng.f32());
            let v = if rng.next() & 1 == 0 { mag } else { -mag };
            block[off..off + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
        }
    }
    Tensor::new(t, &[m, k], Storage::Host(HostBytes::from_bytes(&bytes))).unwrap()
}

fn float_weight(t: DType, m: usize, k: usize, rng: &mut Rng) -> Tensor {
    let v: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
    let bytes: Vec<u8> = match t {
        DType::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => v
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
    };
    Tensor::new(t, &[m, k], Storage::Host(HostBytes::from_bytes(&bytes))).unwrap()
}

/// `mm(x, n, out)`: the matmul under test.
type MatmulFn<'a> = dyn Fn(&[f32], usize, &mut [f32]) + 'a;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Checks that every window `x[s..s + n]` (n in 1..=rows) gives, row for row, the bits of
/// `matmul(x[i])` alone. `mm(x, n, out)` is the matmul under test.
fn check_windows(what: &str, x: &[f32], rows: usize, k: usize, m: usize, mm: &MatmulFn) {
    let single: Vec<Vec<u32>> = (0..rows)
        .map(|i| {
            let mut o = vec![0f32; m];
            mm(&x[i * k..(i + 1) * k], 1, &mut o);
            bits(&o)
        })
        .collect();
    for n in 2..=rows {
        // Windows starting at 0 and at a shifted row (a split prompt's later chunk).
        for s in [0, (n * 7) % (rows - n + 1)] {
            let mut o = vec![f32::NAN; n * m];
            mm(&x[s * k..(s + n) * k], n, &mut o);
            for i in 0..n {
                assert!(
                    bits(&o[i * m..(i + 1) * m]) == single[s + i],
                    "{what}: row {} of a batch of {n} (from {s}) differs from the row alone",
                    s + i
                );
            }
        }
    }
}

fn quant_case(t: DType, m: usize, k_units: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let unit = if t.block_size() == 256 { 256 } else { 32 };
    let k = k_units * unit;
    let w = quant_weight(t, m, k, &mut rng);
    let rows = 20;
    let x: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    for isa in Isa::available() {
        let mm = |x: &[f32], n: usize, o: &mut [f32]| {
            matmul_quant_with(isa, &w, x, n, o).unwrap();
        };
        check_windows(&format!("{t} {isa:?} m={m} k={k}"), &x, rows, k, m, &mm);
    }
}

fn float_case(t: DType, m: usize, k: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let w = float_weight(t, m, k, &mut rng);
    let rows = 20;
    let x: Vec<f32> = (0..rows * k).map(|_| rng.normal()).collect();
    for isa in Isa::available() {
        let mm = |x: &[f32], n: usize, o: &mut [f32]| {
            with_isa(isa, || tensor::cpu::matmul(&w, x, n, o)).unwrap();
        };
        check_windows(&format!("{t} {isa:?} m={m} k={k}"), &x, rows, k, m, &mm);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, .. ProptestConfig::default() })]

    #[test]
    fn quantized_matmul_rows_do_not_depend_on_the_batch(
        t in 0..QUANT_TYPES.len(),
        m in 1usize..70,
        k_units in 1usize..6,
        seed in any::<u64>(),
    ) {
        quant_case(QUANT_TYPES[t], m, k_units, seed);
    }

    #[test]
    fn float_matmul_rows_do_not_depend_on_the_batch(
        t in 0usize..3,
        m in 1usize..70,
        k in 1usize..300,
        seed in any::<u64>(),
    ) {
        float_case([DType::F32, DType::F16, DType::BF16][t], m, k, seed);
    }
}

/// Every quantized type on a matrix large enough to be split over threads.
#[test]
fn every_quantized_type_is_batch_invariant_on_threaded_shapes() {
    for (i, t) in QUANT_TYPES.into_iter().enumerate() {
        // Odd block counts where the type allows (k of the 256 formats: 3 super-blocks).
        let units = if t.block_size() == 256 { 3 } else { 23 };
        quant_case(t, 517, units, 1000 + i as u64);
    }
}

#[test]
fn every_float_type_is_batch_invariant_on_threaded_shapes() {
    for (i, t) in [DType::F32, DType::F16, DType::BF16]
        .into_iter()
        .enumerate()
    {
        float_case(t, 301, 523, 2000 + i as u64);
    }
}

/// A decode step's q/k/v (different types and widths, one with a bias) run together by
/// `CpuExec::matmul_bias_many` give the bits of each projection run alone, on the pool as
/// a decode step runs it and for a prefill batch.
#[test]
fn projections_run_together_equal_each_run_alone() {
    use tensor::exec::{CpuExec, Exec, Projection};
    let mut rng = Rng(77);
    let k = 640;
    let ws = [
        quant_weight(DType::Q5_0, 1024, k, &mut rng),
        quant_weight(DType::Q8_0, 256, k, &mut rng),
        quant_weight(DType::Q4K, 256, k / 256 * 256, &mut rng),
    ];
    let ws = [&ws[0], &ws[1], &ws[2]];
    let bias: Vec<f32> = (0..256).map(|_| rng.normal()).collect();
    let e = CpuExec;
    for n in [1, 3, 20] {
        let x: Vec<f32> = (0..n * k).map(|_| rng.normal()).collect();
        let xs = [
            x.clone(),
            x.clone(),
            x[..].chunks(k).flat_map(|r| r[..512].to_vec()).collect(),
        ];
        let alone: Vec<Vec<f32>> = ws
            .iter()
            .zip(&xs)
            .enumerate()
            .map(|(i, (w, x))| {
                let mut o = vec![0f32; n * w.shape()[0]];
                let b = (i == 1).then_some(&bias);
                e.matmul_bias(w, b, x, n, &mut o).unwrap();
                o
            })
            .collect();
        // The first two share an input; the third (k = 512) runs on its own.
        let mut outs: Vec<Vec<f32>> = ws
            .iter()
            .map(|w| vec![f32::NAN; n * w.shape()[0]])
            .collect();
        let (first, rest) = outs.split_at_mut(1);
        let (second, third) = rest.split_at_mut(1);
        tensor::cpu::on_compute_pool(|| {
            e.matmul_bias_many(
                &mut [
                    Projection {
                        w: ws[0],
                        b: None,
                        out: &mut first[0],
                    },
                    Projection {
                        w: ws[1],
                        b: Some(&bias),
                        out: &mut second[0],
                    },
                ],
                &xs[0],
                n,
            )
            .unwrap();
            e.matmul_bias_many(
                &mut [Projection {
                    w: ws[2],
                    b: None,
                    out: &mut third[0],
                }],
                &xs[2],
                n,
            )
            .unwrap();
        });
        for (i, (got, want)) in outs.iter().zip(&alone).enumerate() {
            assert!(bits(got) == bits(want), "projection {i}, {n} rows");
        }
    }
}

/// Queries at positions `n_kv - n_q..n_kv` over one cache of `n_kv` keys (causal, optional
/// sliding window and soft cap): each query's output row, computed alone, in every window of
/// up to `max_batch` queries and with the whole batch, is bit-identical.
#[allow(clippy::too_many_arguments)]
fn attention_case(
    n_head: usize,
    n_kv_head: usize,
    d: usize,
    n_kv: usize,
    n_q: usize,
    window: Option<usize>,
    softcap: Option<f32>,
    f16_kv: bool,
    seed: u64,
) {
    use tensor::cpu::{AttnMask, AttnParams, KvData, attention};
    let mut rng = Rng(seed | 1);
    let p = AttnParams {
        n_kv_head,
        softcap,
        ..AttnParams::mha(n_head, d)
    };
    let q: Vec<f32> = (0..n_q * n_head * d).map(|_| rng.normal()).collect();
    let k: Vec<f32> = (0..n_kv * n_kv_head * d).map(|_| rng.normal()).collect();
    let v: Vec<f32> = (0..n_kv * n_kv_head * d).map(|_| rng.normal()).collect();
    let (k16, v16): (Vec<half::f16>, Vec<half::f16>) = (
        k.iter().map(|&x| half::f16::from_f32(x)).collect(),
        v.iter().map(|&x| half::f16::from_f32(x)).collect(),
    );
    let kv = |x: &'static str| -> KvData<'_> {
        match (x, f16_kv) {
            ("k", false) => KvData::F32(&k),
            ("k", true) => KvData::F16(&k16),
            (_, false) => KvData::F32(&v),
            _ => KvData::F16(&v16),
        }
    };
    let k_pos: Vec<i32> = (0..n_kv as i32).collect();
    let q_pos: Vec<i32> = (n_kv - n_q..n_kv).map(|p| p as i32).collect();
    let row = n_head * d;
    let run = |a: usize, b: usize| {
        let mut mask = AttnMask::causal(&q_pos[a..b], &k_pos);
        mask.window = window;
        let mut out = vec![f32::NAN; (b - a) * row];
        attention(&q[a * row..b * row], kv("k"), kv("v"), &mask, &p, &mut out);
        bits(&out)
    };
    let single: Vec<Vec<u32>> = (0..n_q).map(|i| run(i, i + 1)).collect();
    let mut windows: Vec<(usize, usize)> = (1..=n_q).map(|len| (0, len)).collect();
    windows.extend((1..n_q).map(|a| (a, n_q)));
    windows.extend((0..n_q).step_by(3).map(|a| (a, (a + 3).min(n_q))));
    for (a, b) in windows {
        let out = run(a, b);
        for i in a..b {
            assert!(
                out[(i - a) * row..(i - a + 1) * row] == single[i][..],
                "attention h{n_head}/{n_kv_head} d{d} kv{n_kv} window {window:?} cap {softcap:?} \
                 f16 {f16_kv}: query {i} in batch {a}..{b} differs from it alone"
            );
        }
    }
}

#[test]
fn attention_rows_do_not_depend_on_the_batch() {
    // Gemma 3 270m (4 / 1 heads of 256, sliding window, soft cap variant), Qwen2.5 0.5B
    // (14 / 2 heads of 64), odd head dims; caches across one and several key chunks.
    attention_case(4, 1, 256, 300, 20, None, None, true, 1);
    attention_case(4, 1, 256, 700, 12, Some(512), Some(30.0), false, 2);
    attention_case(14, 2, 64, 600, 20, None, None, true, 3);
    attention_case(3, 3, 72, 129, 17, None, None, false, 4);
    attention_case(8, 2, 33, 1100, 9, Some(100), None, true, 5);
}

/// Many queries per KV head (an encoder, a long prefill) take the path that packs each
/// head's keys and values once: every row still equals the same query computed alone.
#[test]
fn attention_rows_of_a_long_batch_match_each_row_alone() {
    use tensor::cpu::{AttnMask, AttnParams, KvData, attention};
    for (causal, f16_kv, seed) in [(true, true, 7), (false, false, 8)] {
        let (n_head, n_kv_head, d, n) = (4, 2, 72, 333);
        let mut rng = Rng(seed);
        let p = AttnParams {
            n_kv_head,
            ..AttnParams::mha(n_head, d)
        };
        let q: Vec<f32> = (0..n * n_head * d).map(|_| rng.normal()).collect();
        let k: Vec<f32> = (0..n * n_kv_head * d).map(|_| rng.normal()).collect();
        let v: Vec<f32> = (0..n * n_kv_head * d).map(|_| rng.normal()).collect();
        let k16: Vec<half::f16> = k.iter().map(|&x| half::f16::from_f32(x)).collect();
        let v16: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
        let (kd, vd) = if f16_kv {
            (KvData::F16(&k16), KvData::F16(&v16))
        } else {
            (KvData::F32(&k), KvData::F32(&v))
        };
        let pos: Vec<i32> = (0..n as i32).collect();
        let row = n_head * d;
        let run = |a: usize, b: usize| {
            let mask = if causal {
                AttnMask::causal(&pos[a..b], &pos)
            } else {
                AttnMask::full(&pos[a..b], &pos)
            };
            let mut out = vec![f32::NAN; (b - a) * row];
            attention(&q[a * row..b * row], kd, vd, &mask, &p, &mut out);
            bits(&out)
        };
        let all = run(0, n);
        for i in (0..n).step_by(37).chain([n - 1]) {
            assert!(
                all[i * row..(i + 1) * row] == run(i, i + 1)[..],
                "causal {causal} f16 {f16_kv}: query {i} differs from it alone"
            );
        }
    }
}

/// K-quant blocks at their extremes (every level and sub-block scale at its largest, Q6_K's
/// scales at -128 too) against activations at ±127: the decode kernels' 16-bit products and
/// 32-bit sums must not wrap, so a row alone gives the bits of the GEMM's batch and agrees
/// with the scalar reference.
#[test]
fn extreme_k_quant_blocks_give_the_batch_bits() {
    let (m, k, rows) = (13, 512, 6);
    for t in [DType::Q4K, DType::Q5K, DType::Q6K] {
        for fill in [0xFFu8, 0x80] {
            let mut bytes = vec![fill; m * k / t.block_size() * t.type_size()];
            for block in bytes.chunks_exact_mut(t.type_size()) {
                for &off in scale_offsets(t) {
                    block[off..off + 2].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
                }
            }
            let w = Tensor::new(t, &[m, k], Storage::Host(HostBytes::from_bytes(&bytes))).unwrap();
            let x: Vec<f32> = (0..rows * k)
                .map(|i| if (i / 7) % 2 == 0 { 1.0 } else { -1.0 })
                .collect();
            // Each row's sum of |w| (|x| = 1): the size of the terms that cancel.
            let mut wf = vec![0f32; m * k];
            tensor::quant::dequantize(t, &bytes, &mut wf).unwrap();
            let magnitude = wf.iter().map(|v| v.abs()).sum::<f32>() / m as f32;
            let mut reference = vec![0f32; rows * m];
            matmul_quant_with(Isa::Scalar, &w, &x, rows, &mut reference).unwrap();
            for isa in Isa::available() {
                let mm = |x: &[f32], n: usize, o: &mut [f32]| {
                    matmul_quant_with(isa, &w, x, n, o).unwrap();
                };
                check_windows(&format!("{t} {isa:?} fill {fill:#x}"), &x, rows, k, m, &mm);
                let mut out = vec![0f32; rows * m];
                mm(&x, rows, &mut out);
                for (o, r) in out.iter().zip(&reference) {
                    assert!(
                        (o - r).abs() <= 1e-6 * magnitude,
                        "{t} {isa:?} fill {fill:#x}: {o} against the reference {r} (terms of {magnitude})"
                    );
                }
            }
        }
    }
}
