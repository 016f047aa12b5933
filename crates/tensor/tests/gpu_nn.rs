//! GPU ops of the decoder and encoder blocks against their references: KV-cache buffers
//! (`zeros`, `write_rows` with its f16 rounding bit-exact with `half`), fused attention
//! (masks, GQA, soft cap, f16/f32 KV) against the f64 reference, table GEGLU bit-exact with
//! the CPU, SwiGLU, scale, soft cap, row gather, layer norm and the 2-D rope.
//!
//! Without an adapter each test prints `SKIPPED (no adapter)` (or fails under
//! `MTMD_REQUIRE_GPU=1`). `MTMD_GPU_REPORT=1` prints every NMSE and the attention timing.
#![cfg(feature = "gpu")]

use std::time::Instant;

use half::f16;
use proptest::prelude::*;
use tensor::gpu::{GpuContext, ops};
use tensor::ops::attention::{self as attn, AttnMask, AttnParams};
use tensor::ops::{act, elementwise, norm};
use tensor::{DType, Storage, Tensor, cpu};

mod gpu_support;
use gpu_support::*;

fn report() -> bool {
    std::env::var_os("MTMD_GPU_REPORT").is_some()
}

/// An F16 GPU tensor of `data` rounded to f16, and the rounded values as f32.
fn f16_on_gpu(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> (Tensor, Vec<f32>) {
    let halves: Vec<f16> = data.iter().map(|&v| f16::from_f32(v)).collect();
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    let host = Tensor::new(
        DType::F16,
        shape,
        Storage::Host(tensor::HostBytes::from_bytes(&bytes)),
    )
    .unwrap();
    (
        host.to_gpu(ctx).unwrap(),
        halves.iter().map(|h| h.to_f32()).collect(),
    )
}

fn f16_bits_of(t: &Tensor) -> Vec<u16> {
    let bytes = t.gpu_buffer().unwrap().read_bytes().unwrap();
    bytes
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 12,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// KV-cache buffers

#[test]
fn zeros_are_zero_and_only_float_types() {
    let Some(ctx) = gpu_or_skip() else { return };
    // Recycled buffers hold old data: zeros must clear them.
    drop(on_gpu(&ctx, &[3, 7], &values(1, 21, 5.0)));
    let z = ops::zeros(&ctx, DType::F32, &[3, 7]).unwrap();
    assert_eq!(host(&z), vec![0.0; 21]);
    let z = ops::zeros(&ctx, DType::F16, &[5, 3]).unwrap();
    assert_eq!((z.dtype(), z.shape()), (DType::F16, &[5usize, 3][..]));
    assert_eq!(f16_bits_of(&z), vec![0u16; 15]);
    assert!(ops::zeros(&ctx, DType::Q8_0, &[2, 32]).is_err());
}

/// f32 values where rounding to f16 is delicate: ties (even and odd), just off ties,
/// subnormal results and their ties, underflow to zero, the overflow edge, inf, NaN, -0 and
/// f32 subnormals.
fn delicate_f32() -> Vec<f32> {
    let mut v = vec![
        0.0, -0.0, 1.0, -1.0, 65504.0, -65504.0, 65519.0, 65520.0, -65520.0,
    ];
    v.extend([
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
    ]);
    v.extend([
        f32::NAN,
        f32::from_bits(0x7fc0_1234),
        f32::from_bits(0xff80_0001),
    ]);
    for e in -26..16 {
        let base = 2f32.powi(e);
        // f16 keeps 10 mantissa bits: 2^-11 relative is half an ulp (a tie).
        for k in [1.0, 3.0, 5.0, 1023.0, 2047.0] {
            let tie = base * (1.0 + k * 2f32.powi(-11));
            v.extend([
                tie,
                -tie,
                f32::from_bits(tie.to_bits() + 1),
                f32::from_bits(tie.to_bits() - 1),
            ]);
        }
    }
    // f16 subnormals are multiples of 2^-24: ties at odd multiples of 2^-25.
    for k in [1, 2, 3, 5, 1023, 2047] {
        let tie = k as f32 * 2f32.powi(-25);
        v.extend([
            tie,
            -tie,
            f32::from_bits(tie.to_bits() + 1),
            f32::from_bits(tie.to_bits() - 1),
        ]);
    }
    v
}

#[test]
fn write_rows_into_f16_rounds_exactly_like_half() {
    let Some(ctx) = gpu_or_skip() else { return };
    // Every 4099th f32 bit pattern (~1M values, all exponents) plus the delicate ones.
    let mut src: Vec<f32> = (0..=u32::MAX / 4099)
        .map(|i| f32::from_bits(i * 4099))
        .collect();
    src.extend(delicate_f32());
    // An odd width: rows start mid-word, so neighbouring halves must survive.
    let width = 7;
    src.resize(src.len().div_ceil(width) * width, 0.5);
    let n = src.len() / width;
    let (first, n_rows) = (3, n + 5);
    let old = values(2, n_rows * width, 100.0);
    let (dst, old_rounded) = f16_on_gpu(&ctx, &[n_rows, width], &old);
    let rows = on_gpu(&ctx, &[n, width], &src);
    ops::write_rows(&dst, first, &rows).unwrap();
    let got = f16_bits_of(&dst);
    for (i, &bits) in got.iter().enumerate() {
        let want = if (first * width..(first + n) * width).contains(&i) {
            f16::from_f32(src[i - first * width]).to_bits()
        } else {
            f16::from_f32(old_rounded[i]).to_bits()
        };
        assert_eq!(
            bits,
            want,
            "element {i}: {:?} -> {bits:#06x}, want {want:#06x}",
            src.get(i.wrapping_sub(first * width))
        );
    }
}

#[test]
fn write_rows_into_f32_and_bad_ranges() {
    let Some(ctx) = gpu_or_skip() else { return };
    let dst = ops::zeros(&ctx, DType::F32, &[6, 5]).unwrap();
    let src = values(3, 10, 1.0);
    ops::write_rows(&dst, 4, &on_gpu(&ctx, &[2, 5], &src)).unwrap();
    let got = host(&dst);
    assert_eq!(&got[20..], &src[..]);
    assert!(got[..20].iter().all(|&v| v == 0.0));
    // Past the end, a width mismatch, a host operand: errors, and dst untouched.
    assert!(ops::write_rows(&dst, 5, &on_gpu(&ctx, &[2, 5], &src)).is_err());
    assert!(ops::write_rows(&dst, 0, &on_gpu(&ctx, &[5, 2], &src)).is_err());
    let host_rows = Tensor::from_f32(&[2, 5], &src).unwrap();
    assert!(ops::write_rows(&dst, 0, &host_rows).is_err());
    assert_eq!(host(&dst), got);
}

// ---------------------------------------------------------------------------------------------
// Element-wise and row ops

#[test]
fn geglu_table_is_bit_exact_with_the_cpu() {
    let Some(ctx) = gpu_or_skip() else { return };
    // Every f16 value in (-12, 12) as a gate (so every table entry and both saturations),
    // plus values between f16s, including exact ties.
    let mut gate: Vec<f32> = (0..=u16::MAX)
        .map(|b| f16::from_bits(b).to_f32())
        .filter(|g| g.abs() < 12.0)
        .collect();
    gate.extend(values(4, 5000, 11.0));
    gate.extend(delicate_f32().into_iter().filter(|g| g.abs() < 12.0));
    gate.extend([-10.0, 10.0, -10.000001, 9.999999]);
    let up = values(5, gate.len(), 3.0);
    let shape = [gate.len()];
    let got = host(
        &ops::geglu_f16_table(&on_gpu(&ctx, &shape, &gate), &on_gpu(&ctx, &shape, &up)).unwrap(),
    );
    let mut want = vec![0f32; gate.len()];
    cpu::geglu_f16_table(&gate, &up, &mut want);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "gate {} up {}: {g} vs {w}",
            gate[i],
            up[i]
        );
    }
}

#[test]
fn get_rows_copies_rows_exactly() {
    let Some(ctx) = gpu_or_skip() else { return };
    let (n, w) = (11, 13);
    let table = values(6, n * w, 4.0);
    let ids = [3u32, 4, 5, 0, 10, 10, 2, 9];
    let got = host(&ops::get_rows(&on_gpu(&ctx, &[n, w], &table), &ids).unwrap());
    let mut want = vec![0f32; ids.len() * w];
    tensor::ops::get_rows::reference(&table, w, &ids, &mut want);
    assert_eq!(got, want);
    let gt = on_gpu(&ctx, &[n, w], &table);
    assert_eq!(ops::get_rows(&gt, &[]).unwrap().shape(), &[0, w]);
    assert!(ops::get_rows(&gt, &[11]).is_err());
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn swiglu_scale_and_softcap_match_reference(len in 1usize..3000, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let gate = values(seed, len, 8.0);
        let up = values(seed + 1, len, 2.0);
        let (gg, gu) = (on_gpu(&ctx, &[len], &gate), on_gpu(&ctx, &[len], &up));
        let mut want = vec![0f32; len];
        act::reference::swiglu(&gate, &up, &mut want);
        check("swiglu", &host(&ops::swiglu(&gg, &gu).unwrap()), &want);
        let mut want = gate.clone();
        elementwise::reference::scale(&mut want, -0.37);
        check("scale", &host(&ops::scale(&gg, -0.37).unwrap()), &want);
        let cap = 5.0f64;
        let want: Vec<f32> = gate.iter().map(|&x| (cap * (x as f64 / cap).tanh()) as f32).collect();
        check("softcap", &host(&ops::softcap(&gg, cap as f32).unwrap()), &want);
    }

    #[test]
    fn layer_norm_matches_reference(rows in 1usize..20, cols in 1usize..300, affine in 0usize..4, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        // An offset mean: the two-pass variance must not cancel.
        let x: Vec<f32> = values(seed, rows * cols, 3.0).iter().map(|v| v + 20.0).collect();
        let (w, b) = (values(seed + 1, cols, 1.5), values(seed + 2, cols, 0.5));
        let (w, b) = (
            (affine & 1 != 0).then_some(&w[..]),
            (affine & 2 != 0).then_some(&b[..]),
        );
        let (gw, gb) = (w.map(|w| on_gpu(&ctx, &[cols], w)), b.map(|b| on_gpu(&ctx, &[cols], b)));
        let gx = on_gpu(&ctx, &[rows, cols], &x);
        let got = host(&ops::layer_norm(&gx, gw.as_ref(), gb.as_ref(), 1e-5).unwrap());
        let mut want = vec![0f32; rows * cols];
        norm::reference::layer_norm(&x, w, b, 1e-5, cols, &mut want);
        check("layer_norm", &got, &want);
    }

    #[test]
    fn rope_2d_matches_cpu(tokens in 1usize..20, heads in 1usize..4, quarter in 1usize..20, interleave: bool, seed: u64) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        let head_dim = 4 * quarter;
        let x = values(seed, tokens * heads * head_dim, 1.0);
        let pos_a: Vec<i32> = (0..tokens as i32).map(|t| t / 5).collect();
        let pos_b: Vec<i32> = (0..tokens as i32).map(|t| t % 5 + 3).collect();
        let gx = on_gpu(&ctx, &[tokens, heads, head_dim], &x);
        let got = host(&ops::rope_2d(&gx, &pos_a, &pos_b, 10000.0, interleave).unwrap());
        let mut want = x.clone();
        cpu::rope_2d(&mut want, tokens, heads, head_dim, &pos_a, &pos_b, 10000.0, interleave);
        check("rope_2d", &got, &want);
    }
}

// ---------------------------------------------------------------------------------------------
// Attention

/// One attention case: shapes, mask kind, KV type.
#[derive(Clone, Debug)]
struct AttnCase {
    n_q: usize,
    n_kv: usize,
    /// Cached rows beyond n_kv (ignored by the op).
    spare: usize,
    n_kv_head: usize,
    group: usize,
    head_dim: usize,
    /// 0 full, 1 causal, 2 causal + window, 3 causal + groups, 4 M-RoPE-like ranks.
    mask: usize,
    softcap: bool,
    f16_kv: bool,
    seed: u64,
}

fn run_attention(ctx: &GpuContext, c: &AttnCase) {
    let n_head = c.n_kv_head * c.group;
    let d = c.head_dim;
    let n_ctx = c.n_kv + c.spare;
    let q = values(c.seed, c.n_q * n_head * d, 1.5);
    let k = values(c.seed + 1, n_ctx * c.n_kv_head * d, 1.5);
    let v = values(c.seed + 2, n_ctx * c.n_kv_head * d, 1.0);
    // Queries are the last n_q of the keys' positions (decode / prefill continuation); the
    // first query sits before every key when the mask is causal and n_q > 1.
    let mut k_pos: Vec<i32> = (0..c.n_kv as i32).collect();
    let mut q_pos: Vec<i32> = (0..c.n_q as i32)
        .map(|i| c.n_kv as i32 - c.n_q as i32 + i)
        .collect();
    if c.mask == 4 {
        // Rank positions: runs of tokens share a position (an image's tokens on one t).
        for p in k_pos.iter_mut() {
            *p /= 3;
        }
        for p in q_pos.iter_mut() {
            *p = (*p).max(0) / 3;
        }
    }
    if c.n_q > 1 {
        q_pos[0] = -1;
    }
    let k_group: Vec<u32> = (0..c.n_kv)
        .map(|j| u32::from(j % 10 >= 6) * (j as u32 / 10 + 1))
        .collect();
    let q_group: Vec<u32> = q_pos
        .iter()
        .map(|&p| {
            if p < 0 {
                0
            } else {
                k_group[p as usize % c.n_kv]
            }
        })
        .collect();
    let mut mask = match c.mask {
        0 => AttnMask::full(&q_pos, &k_pos),
        _ => AttnMask::causal(&q_pos, &k_pos),
    };
    if c.mask == 2 {
        mask.window = Some(1 + c.n_kv / 3);
    }
    if c.mask == 3 {
        mask.q_group = Some(&q_group);
        mask.k_group = Some(&k_group);
    }
    let params = AttnParams {
        n_kv_head: c.n_kv_head,
        softcap: c.softcap.then_some(2.5),
        ..AttnParams::mha(n_head, d)
    };
    let gq = on_gpu(ctx, &[c.n_q, n_head * d], &q);
    let kv_shape = [n_ctx, c.n_kv_head * d];
    let (gk, gv, k_used, v_used) = if c.f16_kv {
        let (gk, kr) = f16_on_gpu(ctx, &kv_shape, &k);
        let (gv, vr) = f16_on_gpu(ctx, &kv_shape, &v);
        (gk, gv, kr, vr)
    } else {
        (on_gpu(ctx, &kv_shape, &k), on_gpu(ctx, &kv_shape, &v), k, v)
    };
    let got = ops::attention(&gq, &gk, &gv, c.n_kv, &mask, &params).unwrap();
    assert_eq!(got.shape(), gq.shape());
    let got = host(&got);
    let used = c.n_kv * c.n_kv_head * d;
    let want = attn::reference(&q, &k_used[..used], &v_used[..used], &mask, &params);
    // Rows that see no key are exactly zero.
    let visible = attn::mask_matrix(&mask);
    for i in 0..c.n_q {
        if !visible[i * c.n_kv..(i + 1) * c.n_kv].contains(&true) {
            let row = &got[i * n_head * d..(i + 1) * n_head * d];
            assert!(
                row.iter().all(|&x| x == 0.0),
                "query {i} sees nothing: {row:?}"
            );
        }
    }
    check(&format!("attention {c:?}"), &got, &want);
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn attention_matches_reference(
        n_q in prop_oneof![Just(1usize), 2usize..40],
        n_kv in 1usize..300,
        spare in 0usize..5,
        n_kv_head in 1usize..3,
        group in prop_oneof![Just(1usize), Just(2), Just(4)],
        head_dim in prop_oneof![Just(64usize), Just(72), Just(80), Just(128), Just(256), 1usize..40],
        mask in 0usize..5,
        softcap: bool,
        f16_kv: bool,
        seed: u64,
    ) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        run_attention(&ctx, &AttnCase { n_q, n_kv, spare, n_kv_head, group, head_dim, mask, softcap, f16_kv, seed });
    }
}

#[test]
fn attention_covers_every_feature_deterministically() {
    let Some(ctx) = gpu_or_skip() else { return };
    let base = AttnCase {
        n_q: 5,
        n_kv: 130, // two full tiles of 64 and a partial one
        spare: 3,
        n_kv_head: 2,
        group: 2,
        head_dim: 72,
        mask: 1,
        softcap: false,
        f16_kv: false,
        seed: 21,
    };
    for mask in 0..5 {
        for (softcap, f16_kv) in [(false, false), (true, true), (false, true)] {
            for n_q in [1, 5, 40] {
                run_attention(
                    &ctx,
                    &AttnCase {
                        n_q,
                        mask,
                        softcap,
                        f16_kv,
                        ..base.clone()
                    },
                );
            }
        }
    }
    run_attention(
        &ctx,
        &AttnCase {
            head_dim: 256,
            group: 4,
            n_kv_head: 1,
            ..base.clone()
        },
    );
    run_attention(
        &ctx,
        &AttnCase {
            head_dim: 3,
            f16_kv: true,
            ..base.clone()
        },
    );
    run_attention(
        &ctx,
        &AttnCase {
            n_kv: 64,
            ..base.clone()
        },
    );
}

#[test]
fn attention_splits_queries_under_a_small_binding_limit() {
    let Some(full) = gpu_or_skip() else { return };
    let ctx = full.with_binding_limit(4096);
    // 8 heads x 16 = 512 bytes per query row: 37 queries need several chunks.
    let c = AttnCase {
        n_q: 37,
        n_kv: 20,
        spare: 0,
        n_kv_head: 2,
        group: 4,
        head_dim: 16,
        mask: 3,
        softcap: false,
        f16_kv: true,
        seed: 5,
    };
    run_attention(&ctx, &c);
    // Same limit for the element-wise and row kernels.
    let x = values(7, 1500, 3.0);
    let gx = on_gpu(&ctx, &[30, 50], &x);
    let mut want = vec![0f32; 1500];
    act::reference::swiglu(&x, &x, &mut want);
    check(
        "swiglu split",
        &host(&ops::swiglu(&gx, &gx).unwrap()),
        &want,
    );
    let mut want = vec![0f32; 1500];
    norm::reference::layer_norm(&x, None, None, 1e-6, 50, &mut want);
    check(
        "layer_norm split",
        &host(&ops::layer_norm(&gx, None, None, 1e-6).unwrap()),
        &want,
    );
    let dst = ops::zeros(&ctx, DType::F16, &[40, 41]).unwrap();
    let src = values(8, 31 * 41, 2.0);
    ops::write_rows(&dst, 7, &on_gpu(&ctx, &[31, 41], &src)).unwrap();
    let bits = f16_bits_of(&dst);
    for (i, &b) in bits.iter().enumerate() {
        let want = if (7 * 41..38 * 41).contains(&i) {
            f16::from_f32(src[i - 7 * 41]).to_bits()
        } else {
            0
        };
        assert_eq!(b, want, "element {i}");
    }
}

#[test]
fn attention_rejects_bad_inputs() {
    let Some(ctx) = gpu_or_skip() else { return };
    let pos: Vec<i32> = (0..4).collect();
    let mask = AttnMask::causal(&pos[..1], &pos);
    let p = AttnParams::mha(2, 8);
    let q = on_gpu(&ctx, &[1, 16], &values(1, 16, 1.0));
    let kv = on_gpu(&ctx, &[4, 16], &values(2, 64, 1.0));
    assert!(ops::attention(&q, &kv, &kv, 4, &mask, &p).is_ok());
    assert!(
        ops::attention(&q, &kv, &kv, 5, &mask, &p).is_err(),
        "n_kv vs k_pos"
    );
    let gqa = AttnParams { n_kv_head: 3, ..p };
    assert!(
        ops::attention(&q, &kv, &kv, 4, &mask, &gqa).is_err(),
        "heads"
    );
    let wide = AttnParams::mha(1, 512);
    let q512 = on_gpu(&ctx, &[1, 512], &values(1, 512, 1.0));
    let kv512 = on_gpu(&ctx, &[4, 512], &values(2, 2048, 1.0));
    assert!(
        ops::attention(&q512, &kv512, &kv512, 4, &mask, &wide).is_err(),
        "head_dim 512"
    );
    let far = [i32::MAX];
    let far_mask = AttnMask::causal(&far, &pos);
    assert!(
        ops::attention(&q, &kv, &kv, 4, &far_mask, &p).is_err(),
        "positions"
    );
    // No keys at all: zeros.
    let none = AttnMask::causal(&pos[..1], &[]);
    assert_eq!(
        host(&ops::attention(&q, &kv, &kv, 0, &none, &p).unwrap()),
        vec![0.0; 16]
    );
}

/// Decode-sized attention (1 query, 4096 keys, 8 heads x 128): correct, and timed.
#[test]
fn attention_decode_4096_keys() {
    let Some(ctx) = gpu_or_skip() else { return };
    let (n_kv, n_head, d) = (4096, 8, 128);
    let q = values(31, n_head * d, 1.0);
    let k = values(32, n_kv * n_head * d, 1.0);
    let v = values(33, n_kv * n_head * d, 1.0);
    let k_pos: Vec<i32> = (0..n_kv as i32).collect();
    let q_pos = [n_kv as i32 - 1];
    let mask = AttnMask::causal(&q_pos, &k_pos);
    let p = AttnParams::mha(n_head, d);
    let gq = on_gpu(&ctx, &[1, n_head * d], &q);
    for f16_kv in [true, false] {
        let (gk, gv, kr, vr) = if f16_kv {
            let (gk, kr) = f16_on_gpu(&ctx, &[n_kv, n_head * d], &k);
            let (gv, vr) = f16_on_gpu(&ctx, &[n_kv, n_head * d], &v);
            (gk, gv, kr, vr)
        } else {
            let g = |x: &[f32]| on_gpu(&ctx, &[n_kv, n_head * d], x);
            (g(&k), g(&v), k.clone(), v.clone())
        };
        // Warm-up compiles the pipeline.
        host(&ops::attention(&gq, &gk, &gv, n_kv, &mask, &p).unwrap());
        let runs = 5;
        let t = Instant::now();
        let mut got = Vec::new();
        for _ in 0..runs {
            got = host(&ops::attention(&gq, &gk, &gv, n_kv, &mask, &p).unwrap());
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / runs as f64;
        if report() {
            eprintln!(
                "attention n_q=1 n_kv={n_kv} {n_head}x{d} f16_kv={f16_kv}: {ms:.2} ms per call (incl. download)"
            );
        }
        check(
            "attention decode 4096",
            &got,
            &attn::reference(&q, &kr, &vr, &mask, &p),
        );
    }
}

/// Encoder-sized attention (a Whisper window: 1500 frames attending to each other, the test
/// fixtures' 4 heads x 16 and a real 64-wide head): correct, and timed with the one-query
/// kernel's cost per query beside it (`MTMD_GPU_REPORT=1`).
#[test]
fn attention_encoder_window_1500_frames() {
    let Some(ctx) = gpu_or_skip() else { return };
    let n = 1500;
    for (n_head, d) in [(4, 16), (2, 64)] {
        let q = values(41, n * n_head * d, 1.0);
        let k = values(42, n * n_head * d, 1.0);
        let v = values(43, n * n_head * d, 1.0);
        let pos: Vec<i32> = (0..n as i32).collect();
        let mask = AttnMask::full(&pos, &pos);
        let p = AttnParams::mha(n_head, d);
        let g = |x: &[f32], rows: usize| on_gpu(&ctx, &[rows, n_head * d], x);
        let (gq, gk, gv) = (g(&q, n), g(&k, n), g(&v, n));
        host(&ops::attention(&gq, &gk, &gv, n, &mask, &p).unwrap());
        let t = Instant::now();
        let got = host(&ops::attention(&gq, &gk, &gv, n, &mask, &p).unwrap());
        let tiled_ms = t.elapsed().as_secs_f64() * 1e3;
        check(
            "attention encoder window",
            &got,
            &attn::reference(&q, &k, &v, &mask, &p),
        );
        if report() {
            // Few queries take the one-query kernel: its cost per query, scaled to the window.
            let few = 4;
            let q_few = g(&q[..few * n_head * d], few);
            let mask_few = AttnMask::full(&pos[..few], &pos);
            host(&ops::attention(&q_few, &gk, &gv, n, &mask_few, &p).unwrap());
            let t = Instant::now();
            host(&ops::attention(&q_few, &gk, &gv, n, &mask_few, &p).unwrap());
            let one_ms = t.elapsed().as_secs_f64() * 1e3 * (n / few) as f64;
            eprintln!(
                "attention {n}x{n} {n_head}x{d}: tiled {tiled_ms:.0} ms, one-query kernel ~{one_ms:.0} ms"
            );
        }
    }
}

/// Rope fused into the F16 key write (`ops::rope_write_rows`): bit-identical to the rope kernel
/// followed by the f16 row write, for every pairing and mode, partial rotation, odd row widths
/// (rows starting mid-word) and a binding limit that splits the rows; untouched cache rows keep
/// their bits.
fn rope_write_case(
    ctx: &GpuContext,
    mode: usize,
    n: usize,
    heads: usize,
    head_dim: usize,
    first: usize,
    seed: u64,
) {
    use tensor::ops::rope::{RopeConfig, RopeMode};
    let (mode, n_dims, ppt) = match mode {
        0 => (RopeMode::Normal, head_dim - head_dim % 2, 1),
        1 => (RopeMode::Neox, (head_dim / 2) & !1, 1),
        2 => (
            RopeMode::MultiSection {
                sections: [1, 1, 1, 0],
            },
            6.min(head_dim & !1),
            4,
        ),
        _ => (
            RopeMode::Imrope {
                sections: [1, 1, 1, 0],
            },
            6.min(head_dim & !1),
            4,
        ),
    };
    let cfg = RopeConfig::new(mode, n_dims.max(2), 10000.0);
    let width = heads * head_dim;
    let n_ctx = first + n + 3;
    let x = values(seed, n * width, 2.0);
    let pos: Vec<i32> = (0..n * ppt).map(|i| (i * 7 % 23) as i32).collect();
    let old = values(seed + 1, n_ctx * width, 1.0);
    let (fused, _) = f16_on_gpu(ctx, &[n_ctx, width], &old);
    let (plain, _) = f16_on_gpu(ctx, &[n_ctx, width], &old);
    let rows = on_gpu(ctx, &[n, heads, head_dim], &x);
    ops::rope_write_rows(&fused, first, &rows, &pos, &cfg).unwrap();
    let roped = ops::rope(&rows, &pos, &cfg).unwrap();
    ops::write_rows(&plain, first, &roped.reshape(&[n, width]).unwrap()).unwrap();
    assert_eq!(
        f16_bits_of(&fused),
        f16_bits_of(&plain),
        "rope_write {:?} n={n} {heads}x{head_dim} first={first}",
        cfg.mode
    );
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn rope_fused_into_the_f16_write_equals_rope_then_write(
        mode in 0usize..4, n in 1usize..20, heads in 1usize..4, head_dim in 3usize..40,
        first in 0usize..5, seed: u64,
    ) {
        let Some(ctx) = gpu_or_skip() else { return Ok(()) };
        prop_assume!(head_dim >= 6 || mode < 2);
        rope_write_case(&ctx, mode, n, heads, head_dim, first, seed);
        rope_write_case(&ctx.with_binding_limit(1024), mode, n, heads, head_dim, first, seed);
    }
}
