//! Last-position logits of the two real models against llama.cpp (tests/fixtures/real-text).

mod common;

use common::*;
use llm::batch::sequential_positions;
use llm::{Batch, Decoder, HParams, KvCache, KvType};

fn check(model_file: &str, fixture_dir: &str) {
    let Some(path) = real_model(model_file) else {
        return;
    };
    let file = gguf::GgufFile::open(&path).unwrap();
    let hp = HParams::from_gguf(&file).unwrap();
    let w = llm::weights::Weights::load(&file, &hp).unwrap();
    let dec = Decoder::new(hp, w);
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("real-text/{fixture_dir}/logits.json"))).unwrap(),
    )
    .unwrap();
    let refs = tensor::safetensors::read(fixture(&format!(
        "real-text/{fixture_dir}/logits.safetensors"
    )))
    .unwrap();
    for entry in meta["entries"].as_array().unwrap() {
        let name = entry["tensor"].as_str().unwrap();
        if !name.ends_with(char::is_numeric) {
            continue; // variants are compared below, against the same prompt
        }
        let ids: Vec<u32> = entry["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        for kv in [KvType::F16, KvType::F32] {
            let mut cache = KvCache::new(dec.hp.n_layer, 512, dec.hp.kv_dim(), kv);
            let pos = sequential_positions(0, ids.len(), dec.n_pos_comp());
            let logits = dec.decode(&mut cache, &Batch::tokens(&ids, &pos)).unwrap();
            let mut best = (f32::MAX, 0f32, String::new());
            for variant in ["", "_flash_attn_off", "_flash_attn_off_f32_kv"] {
                let key = format!("{name}{variant}");
                let r = refs[&key].to_f32().unwrap();
                let (err, scale) = max_abs_err(&logits, &r);
                println!("    vs {key}: max_abs {err:.4}");
                if err < best.0 {
                    best = (err, scale, key);
                }
            }
            let r = refs[&best.2].to_f32().unwrap();
            let rel = best.0 / best.1;
            println!(
                "{model_file} {name} kv={kv:?}: closest {} max_abs {:.4} ({:.2e} of max |ref| {:.2}); argmax ours {} ref {}",
                best.2,
                best.0,
                rel,
                best.1,
                argmax(&logits),
                argmax(&r)
            );
            assert!(rel <= 6e-2, "logits differ by {rel:.3e} of max |ref|");
            assert_eq!(argmax(&logits), argmax(&r));
        }
    }
}

#[test]
fn gemma3_270m_logits_match_llama_cpp() {
    check("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m");
}

#[test]
fn qwen25_coder_05b_logits_match_llama_cpp() {
    check(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
    );
}
