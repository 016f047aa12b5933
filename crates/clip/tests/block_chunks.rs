//! A ViT block's feed-forward run on row chunks (how the CPU bounds the memory of a large
//! encode) gives the values of the whole-input pass, bit for bit.

use clip::hparams::FfnAct;
use clip::vit::{Block, Ffn, Linear, Norm, NormKind, Qkv};
use half::f16;
use tensor::exec::CpuExec;
use tensor::{DType, HostBytes, Storage, Tensor};

/// Seeded values in [-0.5, 0.5).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        })
        .collect()
}

fn matrix(dtype: DType, rows: usize, cols: usize, seed: u32) -> Tensor {
    let v = values(rows * cols, seed);
    match dtype {
        DType::F16 => {
            let bytes: Vec<u8> = v
                .iter()
                .flat_map(|x| f16::from_f32(*x).to_le_bytes())
                .collect();
            Tensor::new(
                DType::F16,
                &[rows, cols],
                Storage::Host(HostBytes::from_bytes(&bytes)),
            )
            .unwrap()
        }
        _ => Tensor::from_f32(&[rows, cols], &v).unwrap(),
    }
}

fn linear(dtype: DType, n_out: usize, n_in: usize, seed: u32) -> Linear {
    Linear {
        w: matrix(dtype, n_out, n_in, seed),
        b: Some(values(n_out, seed + 1)),
    }
}

fn block(dtype: DType, d: usize, n_ff: usize, gated: bool) -> Block {
    let norm = |seed| Norm {
        kind: NormKind::Layer,
        w: values(d, seed).iter().map(|v| 1.0 + v).collect(),
        b: Some(values(d, seed + 1)),
        eps: 1e-6,
    };
    Block {
        ln1: norm(10),
        qkv: Qkv::Fused(linear(dtype, 3 * d, d, 20)),
        out: linear(dtype, d, d, 30),
        ln2: norm(40),
        ffn: Ffn {
            up: linear(dtype, n_ff, d, 50),
            gate: gated.then(|| linear(dtype, n_ff, d, 60)),
            down: linear(dtype, d, n_ff, 70),
            act: FfnAct::Gelu,
        },
    }
}

#[test]
fn chunked_feed_forward_equals_the_whole_pass() {
    for (dtype, gated) in [(DType::F32, false), (DType::F16, true)] {
        let (d, n_ff, n) = (48, 136, 70);
        let b = block(dtype, d, n_ff, gated);
        let x = values(n * d, 99);
        let mut whole = x.clone();
        b.ffn_residual_on(&CpuExec, &mut whole, n).unwrap();
        // 16, 24 and 69 rows at most: chunks of 14, 24 / 23 and 35, the last one shorter.
        for max_rows in [16, 24, 69] {
            let mut chunked = x.clone();
            b.ffn_residual_chunked_on(&CpuExec, &mut chunked, n, max_rows)
                .unwrap();
            assert!(
                whole
                    .iter()
                    .zip(&chunked)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype:?} gated {gated}, chunks of ≤ {max_rows} rows differ from the whole pass"
            );
        }
        assert_ne!(whole, x, "the block changed nothing");
    }
}
