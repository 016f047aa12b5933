//! End-to-end golden test through the public library: real images decoded from the fixture
//! files, the mmproj encoder loaded by `Context::new`, chunks evaluated into the text model.
//! Chunks must match llama.cpp exactly; embeddings and last logits within 3e-3 x max|ref|.
//! JPEG inputs go through our stb_image-exact decoder, so they are held to the same bound.

use std::path::PathBuf;
use std::sync::Arc;

use llm::{KvType, Model};
use mtmd::{Bitmap, Chunk, Context, ContextParams, LoadError};
use serde_json::Value;
use testkit::{RefTensors, fixture, max_err};

const REL_TOL: f32 = 3e-3;
/// Bound for cases fed from a JPEG: the same, since JPEG decoding matches stb_image.
const JPEG_REL_TOL: f32 = REL_TOL;

fn as_usize(v: &Value) -> usize {
    v.as_u64().expect("non-negative integer") as usize
}

mod support;
use support::{Place, load_model};

fn run_fixture(arch: &str) {
    run_fixture_on(arch, Place::Cpu);
}

fn run_fixture_on(arch: &str, place: Place) {
    let dir = fixture(arch);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
    )
    .expect("reference.json parses");
    let tensors = RefTensors::load(&dir.join("reference.safetensors"));
    let Some(model) = load_model(dir.join("model.gguf"), place) else {
        return;
    };
    let ctx = Context::new(
        dir.join("mmproj.gguf"),
        model.clone(),
        support::params(place),
    )
    .expect("context");

    for (name, case) in reference["cases"].as_object().expect("cases") {
        let prompt = std::fs::read_to_string(dir.join(case["prompt_file"].as_str().unwrap()))
            .expect("prompt");
        let chunks_ref = case["chunks"].as_array().unwrap();
        let files: Vec<&str> = chunks_ref
            .iter()
            .filter(|c| c["type"] == "image")
            .map(|c| c["image_file"].as_str().unwrap())
            .collect();
        let has_jpeg = files.iter().any(|f| f.ends_with(".jpg"));
        let tol = if has_jpeg { JPEG_REL_TOL } else { REL_TOL };
        let bitmaps: Vec<Bitmap> = files
            .iter()
            .map(|f| Bitmap::from_file(dir.join(f)).expect("image decodes"))
            .collect();
        let refs: Vec<&Bitmap> = bitmaps.iter().collect();
        let chunks = ctx.tokenize(&prompt, &refs).expect("tokenize");
        assert_eq!(chunks.len(), chunks_ref.len(), "{arch}/{name}: chunk count");
        for (chunk, want) in chunks.iter().zip(chunks_ref) {
            assert_eq!(chunk.n_tokens(), as_usize(&want["n_tokens"]), "{name}");
            assert_eq!(chunk.n_pos(), as_usize(&want["n_pos"]), "{name}");
            if let Chunk::Image(img) = chunk {
                assert_eq!(
                    (img.nx(), img.ny()),
                    (as_usize(&want["nx"]), as_usize(&want["ny"]))
                );
                let embd = ctx.encode(img).expect("encode");
                let (err, scale) =
                    max_err(&embd, &tensors.f32s(want["embd_tensor"].as_str().unwrap()));
                println!(
                    "{arch}/{name}/{}: embd max_abs {err:.3e} rel {:.2e}",
                    want["image_file"],
                    err / scale
                );
                let file_tol = if want["image_file"].as_str().unwrap().ends_with(".jpg") {
                    JPEG_REL_TOL
                } else {
                    REL_TOL
                };
                assert!(err <= file_tol * scale, "{arch}/{name}: embeddings");
            }
        }
        let mut session = model.new_session(2048, KvType::F32).unwrap();
        let out = ctx.eval_chunks(&mut session, &chunks, true).expect("eval");
        let logits = out.logits.expect("prompt ends with text");
        let ref_logits = tensors.f32s(case["logits_tensor"].as_str().unwrap());
        let (err, scale) = max_err(&logits, &ref_logits);
        println!(
            "{arch}/{name}: logits max_abs {err:.3e} rel {:.2e}{}",
            err / scale,
            if has_jpeg { " (JPEG input)" } else { "" }
        );
        assert!(err <= tol * scale, "{arch}/{name}: logits");
    }
}

#[test]
fn gemma3_full() {
    run_fixture("gemma3");
}

#[test]
fn qwen2vl_full() {
    run_fixture("qwen2vl");
}

#[test]
fn qwen25vl_full() {
    run_fixture("qwen25vl");
}

#[test]
fn qwen3vl_full() {
    run_fixture("qwen3vl");
}

#[test]
fn gemma3_full_gpu() {
    run_fixture_on("gemma3", Place::Gpu(None));
}

#[test]
fn qwen2vl_full_gpu() {
    run_fixture_on("qwen2vl", Place::Gpu(None));
}

#[test]
fn qwen25vl_full_gpu() {
    run_fixture_on("qwen25vl", Place::Gpu(None));
}

#[test]
fn qwen3vl_full_gpu() {
    run_fixture_on("qwen3vl", Place::Gpu(None));
}

/// Half the layers on the GPU, the output head on the CPU.
#[test]
fn gemma3_split_gpu() {
    run_fixture_on("gemma3", Place::Gpu(Some(3)));
}

#[test]
fn load_errors_are_clear() {
    let model = Arc::new(Model::load(fixture("gemma3").join("model.gguf")).expect("model"));
    let err = |path: PathBuf| match Context::new(path, model.clone(), ContextParams::default()) {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    // Qwen3-VL rows carry the deepstack slices too: wider than any plain n_embd.
    let wrong = err(fixture("qwen3vl").join("mmproj.gguf"));
    assert!(matches!(wrong, LoadError::DimMismatch { .. }), "{wrong}");
    assert!(
        wrong
            .to_string()
            .contains("-dim embeddings, text model has n_embd")
    );
    let not_clip = err(fixture("gemma3").join("model.gguf"));
    assert!(matches!(not_clip, LoadError::NotClip { .. }), "{not_clip}");
    // An audio mmproj is an encoder like any other; its capabilities say what it takes.
    let audio_model =
        Arc::new(Model::load(fixture("qwen2audio").join("model.gguf")).expect("model"));
    let ctx = Context::new(
        fixture("qwen2audio").join("mmproj.gguf"),
        audio_model,
        ContextParams::default(),
    )
    .expect("audio context");
    assert!(ctx.supports_audio() && !ctx.supports_vision());
    let image = Bitmap::from_rgb(2, 2, vec![0; 12]).unwrap();
    let refused = ctx.tokenize("<__media__>", &[&image]).unwrap_err();
    assert!(
        refused.to_string().contains("only takes audio"),
        "{refused}"
    );
}
