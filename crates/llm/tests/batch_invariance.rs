//! Batch invariance end to end: the last prompt token's logits are bit-identical whether the
//! prompt is evaluated in one batch, in chunks of 1, 3 or 7 tokens, or token by token (the
//! CPU kernels give a token the same bits whatever else is in its batch).

mod common;

use common::{argmax, fixture, max_abs_err, real_model};
use llm::batch::sequential_positions;
use llm::{Batch, Decoder, HParams, KvType};

fn load(path: &std::path::Path) -> Decoder {
    let file = gguf::GgufFile::open(path).unwrap();
    let hp = HParams::from_gguf(&file).unwrap();
    let w = llm::weights::Weights::load(&file, &hp).unwrap();
    Decoder::new(hp, w)
}

/// Last-token logits of `ids` evaluated in consecutive chunks of `chunk` tokens.
fn last_logits(dec: &Decoder, ids: &[u32], chunk: usize, kv: KvType) -> Vec<f32> {
    let mut cache = dec.new_cache(512, kv).unwrap();
    let mut logits = Vec::new();
    for (i, part) in ids.chunks(chunk).enumerate() {
        let pos = sequential_positions((i * chunk) as i32, part.len(), dec.n_pos_comp());
        logits = dec.decode(&mut cache, &Batch::tokens(part, &pos)).unwrap();
    }
    logits
}

fn check(name: &str, dec: &Decoder, n_tokens: usize, kv_types: &[KvType]) {
    let n_vocab = dec.n_vocab() as u64;
    // A fixed pseudo-random prompt (ids past the first few hundred: ordinary tokens).
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let ids: Vec<u32> = (0..n_tokens)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (300 + s % (n_vocab.min(20_000) - 300)) as u32
        })
        .collect();
    for &kv in kv_types {
        let whole = last_logits(dec, &ids, ids.len(), kv);
        assert_eq!(whole.len(), dec.n_vocab());
        println!("{name} kv={kv:?}: whole prompt, argmax {}", argmax(&whole));
        for chunk in [1, 3, 7] {
            let got = last_logits(dec, &ids, chunk, kv);
            let differing = got
                .iter()
                .zip(&whole)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            let (err, _) = max_abs_err(&got, &whole);
            println!(
                "{name} kv={kv:?} chunks of {chunk}: {differing} logits differ, max abs {err:e}"
            );
            assert_eq!(
                differing, 0,
                "{name} kv={kv:?}: chunks of {chunk} change the logits"
            );
        }
    }
}

#[test]
fn gemma3_270m_logits_do_not_depend_on_the_prompt_split() {
    if let Some(path) = real_model("gemma-3-270m-q4_k_m.gguf") {
        check("gemma-3-270m", &load(&path), 270, &[KvType::F16]);
    }
}

#[test]
fn qwen25_coder_05b_logits_do_not_depend_on_the_prompt_split() {
    if let Some(path) = real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") {
        check("qwen2.5-coder-0.5b", &load(&path), 270, &[KvType::F16]);
    }
}

/// The tiny random-weight fixtures (float weights, M-RoPE for Qwen2-VL) run everywhere. 270
/// tokens: more than one attention key chunk.
#[test]
fn fixture_logits_do_not_depend_on_the_prompt_split() {
    for arch in ["gemma3", "qwen2vl"] {
        check(
            arch,
            &load(&fixture(&format!("{arch}/model.gguf"))),
            270,
            &[KvType::F16, KvType::F32],
        );
    }
}
