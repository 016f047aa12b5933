//! Throughput of the "cpu-nn" kernels on model-sized shapes: fused attention (ViT encoder,
//! decoder prefill and decode with f16 KV), ViT patch embedding (conv2d) and rope.
//! Attention throughput counts 4·n_q·n_kv·d·n_head flops (two matmuls), before masking.
//!
//! Run: `cargo bench -p tensor --bench cpu_nn -- --warm-up-time 1 --measurement-time 3`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use tensor::cpu;
use tensor::ops::attention::{AttnMask, AttnParams, KvData};
use tensor::ops::rope::{RopeConfig, RopeMode};
use tensor::{DType, HostBytes, Storage, Tensor};

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed) % 1999) as f32 / 1999.0 - 0.5)
        .collect()
}

struct AttnShape {
    name: &'static str,
    n_q: usize,
    n_kv: usize,
    n_head: usize,
    n_kv_head: usize,
    d: usize,
    causal: bool,
    f16_kv: bool,
}

fn attention(c: &mut Criterion) {
    let shapes = [
        AttnShape {
            name: "vit_1024x1024_h16_d64",
            n_q: 1024,
            n_kv: 1024,
            n_head: 16,
            n_kv_head: 16,
            d: 64,
            causal: false,
            f16_kv: false,
        },
        AttnShape {
            name: "prefill_512_h32_kv8_d128_f16",
            n_q: 512,
            n_kv: 512,
            n_head: 32,
            n_kv_head: 8,
            d: 128,
            causal: true,
            f16_kv: true,
        },
        AttnShape {
            name: "decode_1x4096_h32_kv8_d128_f16",
            n_q: 1,
            n_kv: 4096,
            n_head: 32,
            n_kv_head: 8,
            d: 128,
            causal: true,
            f16_kv: true,
        },
        AttnShape {
            name: "decode_1x4096_h8_kv1_d256_f16",
            n_q: 1,
            n_kv: 4096,
            n_head: 8,
            n_kv_head: 1,
            d: 256,
            causal: true,
            f16_kv: true,
        },
    ];
    let mut g = c.benchmark_group("attention");
    for s in &shapes {
        let q = data(s.n_q * s.n_head * s.d, 1);
        let k = data(s.n_kv * s.n_kv_head * s.d, 2);
        let v = data(s.n_kv * s.n_kv_head * s.d, 3);
        let (k16, v16): (Vec<f16>, Vec<f16>) = (
            k.iter().map(|&x| f16::from_f32(x)).collect(),
            v.iter().map(|&x| f16::from_f32(x)).collect(),
        );
        let k_pos: Vec<i32> = (0..s.n_kv as i32).collect();
        let q_pos = &k_pos[s.n_kv - s.n_q..];
        let mask = AttnMask {
            causal: s.causal,
            ..AttnMask::full(q_pos, &k_pos)
        };
        let p = AttnParams {
            n_kv_head: s.n_kv_head,
            ..AttnParams::mha(s.n_head, s.d)
        };
        let mut out = vec![0f32; q.len()];
        g.throughput(Throughput::Elements(
            (4 * s.n_q * s.n_kv * s.d * s.n_head) as u64,
        ));
        g.bench_function(BenchmarkId::from_parameter(s.name), |b| {
            b.iter(|| {
                let (kd, vd) = if s.f16_kv {
                    (KvData::F16(&k16), KvData::F16(&v16))
                } else {
                    (KvData::F32(&k), KvData::F32(&v))
                };
                cpu::attention(&q, kd, vd, &mask, &p, &mut out)
            })
        });
    }
    g.finish();
}

fn patch_embedding(c: &mut Criterion) {
    // SigLIP-so400m-like: 3x448x448 image, 14-pixel patches, 1152 channels, f16 weights.
    let (ch, hw, patch, oc) = (3, 448, 14, 1152);
    let x = data(ch * hw * hw, 4);
    let bytes: Vec<u8> = data(oc * ch * patch * patch, 5)
        .iter()
        .flat_map(|&v| f16::from_f32(v).to_le_bytes())
        .collect();
    let w = Tensor::new(
        DType::F16,
        &[oc, ch, patch, patch],
        Storage::Host(HostBytes::from_bytes(&bytes)),
    )
    .unwrap();
    let p = tensor::ops::conv::Conv2dParams::patch(patch);
    let n = (hw / patch) * (hw / patch);
    let mut out = vec![0f32; n * oc];
    let mut g = c.benchmark_group("conv2d");
    g.throughput(Throughput::Elements(
        (2 * n * oc * ch * patch * patch) as u64,
    ));
    g.bench_function("patch_embed_448_p14_c1152_f16", |b| {
        b.iter(|| cpu::conv::conv2d_tokens(&x, [ch, hw, hw], &w, &p, &mut out).unwrap())
    });
    g.finish();
}

fn rope(c: &mut Criterion) {
    let (tokens, heads, d) = (1024, 16, 128);
    let x0 = data(tokens * heads * d, 6);
    let pos: Vec<i32> = (0..tokens as i32).collect();
    let pos4: Vec<i32> = (0..4 * tokens as i32).collect();
    let mut g = c.benchmark_group("rope");
    g.throughput(Throughput::Elements(x0.len() as u64));
    for (name, cfg, pos) in [
        (
            "neox_1024x16x128",
            RopeConfig::new(RopeMode::Neox, d, 1e6),
            &pos,
        ),
        (
            "imrope_1024x16x128",
            RopeConfig::new(
                RopeMode::Imrope {
                    sections: [24, 20, 20, 0],
                },
                d,
                5e6,
            ),
            &pos4,
        ),
    ] {
        let mut x = x0.clone();
        g.bench_function(name, |b| {
            b.iter(|| cpu::rope(&mut x, tokens, heads, d, pos, &cfg))
        });
    }
    g.finish();
}

criterion_group!(benches, attention, patch_embedding, rope);
criterion_main!(benches);
