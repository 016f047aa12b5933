//! Golden tests: each vision fixture's reference pixels through our encoder against
//! llama.cpp's `mtmd_encode_chunk` output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clip::ClipModel;
use tensor::safetensors::SafeTensor;

fn fixture(arch: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(arch)
}

fn tensor_f32(refs: &BTreeMap<String, SafeTensor>, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t = refs
        .get(name)
        .unwrap_or_else(|| panic!("{name} missing from reference"));
    (t.shape.clone(), t.to_f32().expect("f32 reference tensor"))
}

/// Runs every image chunk of every case of `arch` and checks rows and chunk grid.
fn golden(arch: &str) {
    let dir = fixture(arch);
    let model = ClipModel::load(dir.join("mmproj.gguf")).expect("load mmproj");
    let refs = tensor::safetensors::read(dir.join("reference.safetensors")).expect("read ref");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (case, c) in json["cases"].as_object().unwrap() {
        for chunk in c["chunks"].as_array().unwrap() {
            if chunk["type"] != "image" {
                continue;
            }
            let (pshape, pixels) = tensor_f32(&refs, chunk["pixels_tensor"].as_str().unwrap());
            let (h, w) = (pshape[2], pshape[3]);
            let (eshape, want) = tensor_f32(&refs, chunk["embd_tensor"].as_str().unwrap());
            let got = model.encode(&pixels, w, h).expect("encode");
            assert_eq!(got.n_tokens, eshape[0], "{arch}/{case}: n_tokens");
            assert_eq!(model.n_embd_out(), eshape[1], "{arch}/{case}: n_embd_out");
            assert_eq!(
                got.nx as u64,
                chunk["nx"].as_u64().unwrap(),
                "{arch}/{case}: nx"
            );
            assert_eq!(
                got.ny as u64,
                chunk["ny"].as_u64().unwrap(),
                "{arch}/{case}: ny"
            );
            assert_eq!(got.data.len(), want.len());
            let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max_abs = got
                .data
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let rel = max_abs / max_ref;
            println!(
                "{arch}/{case}/{}: {}x{} -> {} tokens, max abs {max_abs:.3e}, rel {rel:.3e}",
                chunk["embd_tensor"], w, h, got.n_tokens
            );
            assert!(rel <= 3e-3, "{arch}/{case}: rel error {rel:.3e} > 3e-3");
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn gemma3_golden() {
    golden("gemma3");
}

#[test]
fn unsupported_projector_is_named() {
    let err = clip::registry::lookup("no_such_projector")
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("no_such_projector") && msg.contains("gemma3"),
        "{msg}"
    );
}

#[test]
fn qwen2vl_golden() {
    golden("qwen2vl");
}

#[test]
fn qwen25vl_golden() {
    golden("qwen25vl");
}

#[test]
fn qwen3vl_golden() {
    golden("qwen3vl");
}
