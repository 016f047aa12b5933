//! The "cpu-nn" kernels (rope, attention, conv, pool, interpolation, concat, permute) on
//! every instruction-set path this machine has, against the scalar references in `ops/`,
//! on random shapes with tails: NMSE <= 1e-7. `PRINT_NMSE=1` prints every comparison.

use half::f16;
use proptest::prelude::*;
use tensor::cpu::{self, Isa};
use tensor::ops;
use tensor::ops::attention::{AttnMask, AttnParams, KvData};
use tensor::ops::conv::{Conv1dParams, Conv2dParams};
use tensor::ops::interp::InterpMode;
use tensor::ops::pool::{Pool2dParams, PoolKind};
use tensor::ops::rope::{RopeConfig, RopeMode};
use tensor::{DType, HostBytes, Storage, Tensor};
use testkit::nmse;

const MAX_NMSE: f64 = 1e-7;

fn paths() -> Vec<Isa> {
    let mut paths = vec![Isa::Scalar];
    paths.extend(tensor::isa::test_levels(
        &[Isa::Avx2, Isa::Avx512],
        "float kernel paths",
    ));
    paths
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let e = nmse(got, want);
    if std::env::var_os("PRINT_NMSE").is_some() {
        eprintln!("NMSE {what}: {e:e}");
    }
    if e > MAX_NMSE || e.is_nan() {
        let first = got
            .iter()
            .zip(want)
            .position(|(g, w)| (g - w).abs() > 1e-5 * w.abs().max(1.0));
        panic!(
            "{what}: NMSE {e:e} over {} values; first difference at {first:?}: {:?}",
            got.len(),
            first.map(|i| (got[i], want[i]))
        );
    }
}

/// Deterministic pseudo-random values in [-scale, scale) (proptest picks the seed).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn f16_tensor(shape: &[usize], data: &[f32]) -> Tensor {
    let bytes: Vec<u8> = data
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    Tensor::new(
        DType::F16,
        shape,
        Storage::Host(HostBytes::from_bytes(&bytes)),
    )
    .unwrap()
}

fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

// ------------------------------------------------------------------------------ attention

#[derive(Debug, Clone)]
struct AttnCase {
    n_q: usize,
    n_kv: usize,
    n_kv_head: usize,
    group: usize,
    head_dim: usize,
    causal: bool,
    window: Option<usize>,
    groups: bool,
    softcap: Option<f32>,
    f16_kv: bool,
    seed: u64,
}

fn attn_case() -> impl Strategy<Value = AttnCase> {
    (
        (1usize..24, 1usize..150, 1usize..3, 1usize..4),
        prop::sample::select(vec![64usize, 80, 128, 256, 72, 17, 8]),
        (any::<bool>(), prop::option::of(1usize..40), any::<bool>()),
        (
            prop::option::of(prop::sample::select(vec![20.0f32, 50.0])),
            any::<bool>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (n_q, n_kv, n_kv_head, group),
                head_dim,
                (causal, window, groups),
                (softcap, f16_kv, seed),
            )| {
                AttnCase {
                    n_q,
                    n_kv,
                    n_kv_head,
                    group,
                    head_dim,
                    causal,
                    window,
                    groups,
                    softcap,
                    f16_kv,
                    seed,
                }
            },
        )
}

fn check_attention(c: &AttnCase) {
    let n_head = c.n_kv_head * c.group;
    let d = c.head_dim;
    let q = values(c.n_q * n_head * d, c.seed, 1.0);
    let mut k = values(c.n_kv * c.n_kv_head * d, c.seed ^ 1, 1.0);
    let mut v = values(c.n_kv * c.n_kv_head * d, c.seed ^ 2, 1.0);
    if c.f16_kv {
        k = round_f16(&k);
        v = round_f16(&v);
    }
    let (k16, v16): (Vec<f16>, Vec<f16>) = (
        k.iter().map(|&x| f16::from_f32(x)).collect(),
        v.iter().map(|&x| f16::from_f32(x)).collect(),
    );
    // Queries are the last n_q of the n_kv positions (a decoder continuing a prompt), so
    // causal masks leave early queries of long prompts partly blind when n_q > n_kv.
    let k_pos: Vec<i32> = (0..c.n_kv as i32).collect();
    let q_pos: Vec<i32> = (0..c.n_q as i32)
        .map(|i| c.n_kv as i32 - c.n_q as i32 + i)
        .collect();
    let q_group: Vec<u32> = q_pos.iter().map(|&p| u32::from(p % 7 > 3)).collect();
    let k_group: Vec<u32> = k_pos.iter().map(|&p| u32::from(p % 7 > 3)).collect();
    let mask = AttnMask {
        q_pos: &q_pos,
        k_pos: &k_pos,
        causal: c.causal,
        window: c.window,
        q_group: c.groups.then_some(&q_group[..]),
        k_group: c.groups.then_some(&k_group[..]),
    };
    let p = AttnParams {
        n_head,
        n_kv_head: c.n_kv_head,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
        softcap: c.softcap,
    };
    let want = ops::attention::reference(&q, &k, &v, &mask, &p);
    for path in paths() {
        let mut got = vec![f32::NAN; want.len()];
        let (kd, vd) = if c.f16_kv {
            (KvData::F16(&k16), KvData::F16(&v16))
        } else {
            (KvData::F32(&k), KvData::F32(&v))
        };
        cpu::with_isa(path, || cpu::attention(&q, kd, vd, &mask, &p, &mut got));
        assert_close(&format!("attention {path:?} {c:?}"), &got, &want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn attention_matches_naive_softmax(c in attn_case()) {
        check_attention(&c);
    }
}

#[test]
fn attention_long_context_and_many_heads() {
    // A prefill larger than one task and one KV block in every direction.
    for (n_q, n_kv, head_dim, window) in [
        (70, 200, 64, None),
        (33, 333, 128, Some(100)),
        (1, 1000, 80, None),
    ] {
        check_attention(&AttnCase {
            n_q,
            n_kv,
            n_kv_head: 2,
            group: 4,
            head_dim,
            causal: true,
            window,
            groups: false,
            softcap: None,
            f16_kv: false,
            seed: 7,
        });
    }
}

#[test]
fn attention_splits_keys_when_tasks_are_few() {
    // One KV head and one query: a single task, so a 4-thread pool splits the keys; the
    // early query sees only the first split (the others have nothing visible).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| {
        for (n_q, n_kv, group, causal) in
            [(1, 1000, 1, true), (1, 1500, 4, false), (2, 777, 3, true)]
        {
            check_attention(&AttnCase {
                n_q,
                n_kv,
                n_kv_head: 1,
                group,
                head_dim: 64,
                causal,
                window: None,
                groups: false,
                softcap: None,
                f16_kv: true,
                seed: 3,
            });
        }
        let k_pos: Vec<i32> = (0..1000).collect();
        let (d, q_pos) = (32, [300]);
        let mask = AttnMask::causal(&q_pos, &k_pos);
        let p = AttnParams::mha(1, d);
        let q = values(d, 1, 1.0);
        let k = values(1000 * d, 2, 1.0);
        let v = values(1000 * d, 3, 1.0);
        let mut got = vec![0f32; d];
        cpu::attention(&q, KvData::F32(&k), KvData::F32(&v), &mask, &p, &mut got);
        assert_close(
            "split attention",
            &got,
            &ops::attention::reference(&q, &k, &v, &mask, &p),
        );
    });
}

#[test]
fn attention_tensor_op_agrees_with_kernel() {
    let (n_q, n_kv, nh, d) = (5, 9, 2, 16);
    let q = values(n_q * nh * d, 1, 1.0);
    let k = values(n_kv * nh * d, 2, 1.0);
    let v = values(n_kv * nh * d, 3, 1.0);
    let pos: Vec<i32> = (0..n_kv as i32).collect();
    let mask = AttnMask::causal(&pos[n_kv - n_q..], &pos);
    let p = AttnParams::mha(nh, d);
    let t = |s: &[usize], x: &[f32]| Tensor::from_f32(s, x).unwrap();
    let got = ops::attention::attention(
        &t(&[n_q, nh, d], &q),
        &t(&[n_kv, nh, d], &k),
        &t(&[n_kv, nh * d], &v),
        &mask,
        &p,
    )
    .unwrap();
    assert_close(
        "ops::attention",
        got.as_f32().unwrap(),
        &ops::attention::reference(&q, &k, &v, &mask, &p),
    );
}

// ------------------------------------------------------------------------------ rope

fn rope_mode() -> impl Strategy<Value = RopeMode> {
    let s = (0usize..5, 0usize..5, 0usize..5, 0usize..3)
        .prop_filter("some section", |s| s.0 + s.1 + s.2 + s.3 > 0);
    (0u8..5, s).prop_map(|(m, (a, b, c, d))| {
        let sections = [a, b, c, d];
        match m {
            0 => RopeMode::Normal,
            1 => RopeMode::Neox,
            2 => RopeMode::MultiSection { sections },
            3 => RopeMode::Vision { sections },
            _ => RopeMode::Imrope { sections },
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn rope_matches_reference(
        mode in rope_mode(),
        tokens in 1usize..9,
        heads in 1usize..4,
        half_dim in 1usize..40,
        rotated in 0.1f32..1.0,
        factors in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let head_dim = 2 * half_dim;
        let n_dims = match mode {
            RopeMode::Vision { .. } => {
                prop_assume!(half_dim % 2 == 0);
                half_dim
            }
            _ => (((half_dim as f32 * rotated) as usize).max(1)) * 2,
        };
        let mut cfg = RopeConfig::new(mode.clone(), n_dims, 10000.0);
        cfg.freq_scale = 0.75;
        cfg.attn_factor = 1.25;
        if factors {
            cfg.freq_factors = Some(values(head_dim, seed ^ 9, 1.0).iter().map(|v| 1.5 + v).collect());
        }
        let n_pos = tokens * mode.positions_per_token();
        let positions: Vec<i32> = values(n_pos, seed ^ 5, 3000.0).iter().map(|&v| v as i32).collect();
        let x = values(tokens * heads * head_dim, seed, 2.0);
        let want = ops::rope::reference(&x, tokens, heads, head_dim, &positions, &cfg);
        let mut got = x.clone();
        cpu::rope(&mut got, tokens, heads, head_dim, &positions, &cfg);
        // Same f32 operations in the same order: identical, not just close.
        prop_assert_eq!(got, want, "{:?} n_dims {} head_dim {}", mode, n_dims, head_dim);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn rope_2d_matches_reference(
        tokens in 1usize..12,
        heads in 1usize..4,
        quarter in 1usize..20,
        interleave in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let head_dim = 4 * quarter;
        let x = values(tokens * heads * head_dim, seed, 2.0);
        let pos_a: Vec<i32> = (0..tokens as i32).map(|t| t / 3).collect();
        let pos_b: Vec<i32> = (0..tokens as i32).map(|t| t % 3).collect();
        let want = ops::rope::reference_2d(&x, tokens, heads, head_dim, &pos_a, &pos_b, 10000.0, interleave);
        let mut got = x.clone();
        cpu::rope::rope_2d(&mut got, tokens, heads, head_dim, &pos_a, &pos_b, 10000.0, interleave);
        prop_assert_eq!(got, want);
    }
}

#[test]
fn rope_2d_halves_take_even_and_odd_frequencies() {
    // head_dim 8, interleaved: first half pairs use base^(-2·{0,2}/8), second base^(-2·{1,3}/8).
    let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    let mut got = x.clone();
    cpu::rope::rope_2d(&mut got, 1, 1, 8, &[3], &[5], 100.0, true);
    let rot = |a: f32, b: f32, t: f32| (a * t.cos() - b * t.sin(), a * t.sin() + b * t.cos());
    let f = |i: f32| 100f32.powf(-2.0 * i / 8.0);
    let mut want = x.clone();
    for (pair, (pos, freq_idx)) in [(3.0, 0.0), (3.0, 2.0), (5.0, 1.0), (5.0, 3.0)]
        .into_iter()
        .enumerate()
    {
        let (a, b) = rot(x[2 * pair], x[2 * pair + 1], pos * f(freq_idx));
        want[2 * pair] = a;
        want[2 * pair + 1] = b;
    }
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

// ------------------------------------------------------------------------------ conv

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn conv2d_matches_reference(
        (c, h, w, oc) in (1usize..5, 1usize..20, 1usize..20, 1usize..20),
        (kh, kw) in (1usize..5, 1usize..5),
        (sy, sx, py, px, dy, dx) in (1usize..4, 1usize..4, 0usize..3, 0usize..3, 1usize..3, 1usize..3),
        f16_w in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let p = Conv2dParams { stride: [sy, sx], padding: [py, px], dilation: [dy, dx] };
        let Some([oh, ow]) = p.out_size(h, w, kh, kw) else { return Ok(()); };
        let x = values(c * h * w, seed, 1.0);
        let mut wt = values(oc * c * kh * kw, seed ^ 3, 1.0);
        let weight = if f16_w {
            wt = round_f16(&wt);
            f16_tensor(&[oc, c, kh, kw], &wt)
        } else {
            Tensor::from_f32(&[oc, c, kh, kw], &wt).unwrap()
        };
        let want = ops::conv::reference::conv2d(&x, [c, h, w], &wt, [oc, kh, kw], &p);
        for path in paths() {
            let mut got = vec![0f32; oc * oh * ow];
            cpu::with_isa(path, || cpu::conv2d(&x, [c, h, w], &weight, &p, &mut got)).unwrap();
            assert_close(&format!("conv2d {path:?}"), &got, &want);
            // Token-major output is the transpose.
            let mut tokens = vec![0f32; oc * oh * ow];
            cpu::with_isa(path, || cpu::conv::conv2d_tokens(&x, [c, h, w], &weight, &p, &mut tokens)).unwrap();
            let mut back = vec![0f32; tokens.len()];
            cpu::transpose(&tokens, oh * ow, oc, &mut back);
            prop_assert_eq!(&back, &got);
        }
    }

    #[test]
    fn conv1d_matches_reference(
        (c, l, oc, k) in (1usize..9, 1usize..60, 1usize..24, 1usize..6),
        (stride, pad) in (1usize..3, 0usize..3),
        f16_w in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let p = Conv1dParams::new(stride, pad);
        let Some(lo) = ops::conv::out_len(l, k, stride, pad, 1) else { return Ok(()); };
        let x = values(c * l, seed, 1.0);
        let mut wt = values(oc * c * k, seed ^ 3, 1.0);
        let weight = if f16_w {
            wt = round_f16(&wt);
            f16_tensor(&[oc, c, k], &wt)
        } else {
            Tensor::from_f32(&[oc, c, k], &wt).unwrap()
        };
        let want = ops::conv::reference::conv1d(&x, [c, l], &wt, [oc, k], &p);
        for path in paths() {
            let mut got = vec![0f32; oc * lo];
            cpu::with_isa(path, || cpu::conv1d(&x, [c, l], &weight, &p, &mut got)).unwrap();
            assert_close(&format!("conv1d {path:?}"), &got, &want);
        }
    }
}

#[test]
fn vit_patch_embedding_shape() {
    // 3 x 28 x 42 image, 14-pixel patches, 8 channels: 2 x 3 patches.
    let x = values(3 * 28 * 42, 1, 1.0);
    let wt = values(8 * 3 * 14 * 14, 2, 0.1);
    let w = Tensor::from_f32(&[8, 3, 14, 14], &wt).unwrap();
    let p = Conv2dParams::patch(14);
    let got =
        ops::conv::conv2d_tokens(&Tensor::from_f32(&[3, 28, 42], &x).unwrap(), &w, &p).unwrap();
    assert_eq!(got.shape(), &[6, 8]);
    let want = ops::conv::reference::conv2d(&x, [3, 28, 42], &wt, [8, 14, 14], &p);
    let mut back = vec![0f32; 48];
    cpu::transpose(got.as_f32().unwrap(), 6, 8, &mut back);
    assert_close("patch embedding", &back, &want);
}

// ------------------------------------------------------------------------------ pool, interp

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn pools_match_reference(
        (c, h, w) in (1usize..4, 1usize..17, 1usize..17),
        (kh, kw, sy, sx, py, px) in (1usize..4, 1usize..4, 1usize..4, 1usize..4, 0usize..2, 0usize..2),
        max in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let kind = if max { PoolKind::Max } else { PoolKind::Avg };
        let p = Pool2dParams { kernel: [kh, kw], stride: [sy, sx], padding: [py, px] };
        let x = values(c * h * w, seed, 1.0);
        if let Some([oh, ow]) = p.out_size(h, w) {
            let mut got = vec![0f32; c * oh * ow];
            cpu::pool::pool2d(kind, &x, [c, h, w], &p, &mut got);
            prop_assert_eq!(got, ops::pool::reference::pool2d(kind, &x, [c, h, w], &p));
        }
        if let Some(lo) = (w + 2 * px).checked_sub(kw).map(|r| r / sx + 1) {
            let mut got = vec![0f32; c * h * lo];
            cpu::pool::pool1d(kind, &x, [c * h, w], kw, sx, px, &mut got);
            assert_close("pool1d", &got, &ops::pool::reference::pool1d(kind, &x, [c * h, w], kw, sx, px));
        }
    }

    #[test]
    fn interpolation_matches_reference(
        (c, h, w, oh, ow) in (1usize..4, 1usize..12, 1usize..12, 1usize..30, 1usize..30),
        mode in prop::sample::select(vec![InterpMode::Nearest, InterpMode::Bilinear, InterpMode::BilinearAntialias, InterpMode::Bicubic]),
        align_corners in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let x = values(c * h * w, seed, 1.0);
        let mut got = vec![0f32; c * oh * ow];
        cpu::interp::interpolate(mode, align_corners, &x, [c, h, w], [oh, ow], &mut got);
        let want = ops::interp::reference(mode, align_corners, &x, [c, h, w], [oh, ow]);
        assert_close(&format!("interpolate {mode:?} ac={align_corners}"), &got, &want);
    }

    #[test]
    fn concat_and_permute_match_reference(
        shape in prop::collection::vec(1usize..7, 1..5),
        extra in 1usize..5,
        dim_pick in 0usize..4,
        perm_seed in any::<u64>(),
    ) {
        let rank = shape.len();
        let dim = dim_pick % rank;
        let mut shape_b = shape.clone();
        shape_b[dim] = extra;
        let a = values(shape.iter().product(), perm_seed, 1.0);
        let b = values(shape_b.iter().product(), perm_seed ^ 1, 1.0);
        let ta = Tensor::from_f32(&shape, &a).unwrap();
        let tb = Tensor::from_f32(&shape_b, &b).unwrap();
        let got = ops::concat::concat(&[&ta, &tb], dim).unwrap();
        prop_assert_eq!(got.to_f32_vec().unwrap(), ops::concat::reference(&[(&a, &shape), (&b, &shape_b)], dim));

        // A permutation from the seed (Fisher-Yates on the dims).
        let mut perm: Vec<usize> = (0..rank).collect();
        let mut s = perm_seed;
        for i in (1..rank).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            perm.swap(i, (s >> 33) as usize % (i + 1));
        }
        let got = ops::permute::permute(&ta, &perm).unwrap();
        let want = ops::permute::reference(&ta, &perm).unwrap();
        prop_assert_eq!(got.shape(), want.shape());
        prop_assert_eq!(got.to_f32_vec().unwrap(), want.to_f32_vec().unwrap());
    }
}
