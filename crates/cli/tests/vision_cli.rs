//! Golden test of `mtmd dump` (and `mtmd run --image`) against llama.cpp's libmtmd on the
//! vision fixtures: chunk list identical, embeddings and last logits within 3e-3 x max|ref|,
//! greedy tokens identical while llama.cpp's argmax margin is clear. Plus the CLI's
//! one-line errors for bad multimodal input.
//!
//! JPEG cases (`photo2.jpg`) are held to the same bounds: our baseline JPEG decoder
//! reproduces stb_image's pixels exactly.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const REL_TOL: f32 = 3e-3;
/// JPEG decoding matches stb_image exactly, so JPEG cases get the same bound.
const JPEG_REL_TOL: f32 = REL_TOL;
const CLEAR_MARGIN: f64 = 5e-2;

fn fixture_dir(arch: &str) -> PathBuf {
    testkit::fixture(arch)
}

fn mtmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(args)
        .output()
        .expect("mtmd runs")
}

/// (max |ours - ref|, max |ref|)
use testkit::max_err;

fn f32s(path: &Path, name: &str) -> Vec<f32> {
    let tensors = tensor::safetensors::read(path).expect("safetensors");
    tensors
        .get(name)
        .unwrap_or_else(|| panic!("{} lacks {name}", path.display()))
        .to_f32()
        .expect("f32")
}

fn run_fixture(arch: &str) {
    let dir = fixture_dir(arch);
    let reference: Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let ref_tensors = dir.join("reference.safetensors");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    for (name, case) in reference["cases"].as_object().unwrap() {
        let prompt =
            std::fs::read_to_string(dir.join(case["prompt_file"].as_str().unwrap())).unwrap();
        let chunks_ref = case["chunks"].as_array().unwrap();
        let images: Vec<&Value> = chunks_ref.iter().filter(|c| c["type"] == "image").collect();
        let out_path = std::env::temp_dir().join(format!(
            "vision_cli_{arch}_{name}_{}.safetensors",
            std::process::id()
        ));
        let mut args = vec![
            "dump".to_string(),
            "-m".into(),
            s(&dir.join("model.gguf")),
            "--mmproj".into(),
            s(&dir.join("mmproj.gguf")),
            "-p".into(),
            prompt,
            "--raw".into(),
            "-n".into(),
            "16".into(),
            "--out".into(),
            s(&out_path),
        ];
        for img in &images {
            args.push("--image".into());
            args.push(s(&dir.join(img["image_file"].as_str().unwrap())));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = mtmd(&argv);
        assert!(
            out.status.success(),
            "{arch}/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");

        // Chunks: identical structure and tokens.
        let chunks = got["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), chunks_ref.len(), "{arch}/{name}: chunk count");
        for (i, (c, r)) in chunks.iter().zip(chunks_ref).enumerate() {
            for key in ["type", "n_tokens", "n_pos"] {
                assert_eq!(c[key], r[key], "{arch}/{name}: chunk {i} {key}");
            }
            let keys: &[&str] = if r["type"] == "text" {
                &["tokens"]
            } else {
                &["nx", "ny"]
            };
            for key in keys {
                assert_eq!(c[*key], r[*key], "{arch}/{name}: chunk {i} {key}");
            }
        }

        // Embeddings per media chunk.
        let mut any_jpeg = false;
        for (k, img) in images.iter().enumerate() {
            let jpeg = img["image_file"].as_str().unwrap().ends_with(".jpg");
            any_jpeg |= jpeg;
            let ours = f32s(&out_path, &format!("embd.{k}"));
            let want = f32s(&ref_tensors, img["embd_tensor"].as_str().unwrap());
            let (err, scale) = max_err(&ours, &want);
            let tol = if jpeg { JPEG_REL_TOL } else { REL_TOL };
            println!(
                "{arch}/{name}: embd.{k} ({}) max_abs {err:.3e} rel {:.2e}{}",
                img["image_file"],
                err / scale,
                if jpeg { " [JPEG]" } else { "" }
            );
            assert!(err <= tol * scale, "{arch}/{name}: embd.{k}");
        }

        // Last prompt logits.
        let ours = f32s(&out_path, "logits");
        let want = f32s(&ref_tensors, case["logits_tensor"].as_str().unwrap());
        let (err, scale) = max_err(&ours, &want);
        let tol = if any_jpeg { JPEG_REL_TOL } else { REL_TOL };
        println!(
            "{arch}/{name}: logits max_abs {err:.3e} rel {:.2e}{}",
            err / scale,
            if any_jpeg { " [JPEG input]" } else { "" }
        );
        assert!(err <= tol * scale, "{arch}/{name}: logits");

        // Greedy: identical while the reference margin is clear (first divergence ends the
        // comparison: later steps see different contexts).
        let greedy: Vec<u64> = got["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let want: Vec<u64> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let margins: Vec<f64> = case["greedy_top1_minus_top2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let same = greedy.iter().zip(&want).take_while(|(a, b)| a == b).count();
        println!("{arch}/{name}: greedy agrees on {same}/16 leading tokens");
        if same < want.len() {
            assert!(
                margins[same] < CLEAR_MARGIN,
                "{arch}/{name}: greedy step {same} differs ({} vs {}) with a clear margin {}",
                greedy[same],
                want[same],
                margins[same]
            );
        }
        let _ = std::fs::remove_file(&out_path);
    }
}

#[test]
fn gemma3_dump_matches_llama_cpp() {
    run_fixture("gemma3");
}

#[test]
fn qwen2vl_dump_matches_llama_cpp() {
    run_fixture("qwen2vl");
}

#[test]
fn qwen25vl_dump_matches_llama_cpp() {
    run_fixture("qwen25vl");
}

#[test]
fn qwen3vl_dump_matches_llama_cpp() {
    run_fixture("qwen3vl");
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn fails_with(args: &[&str], needle: &str) {
    let out = mtmd(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line expected, got {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
}

#[test]
fn run_with_images_and_its_errors() {
    let q = |f: &str| {
        fixture_dir("qwen2vl")
            .join(f)
            .to_string_lossy()
            .into_owned()
    };
    let g = |f: &str| fixture_dir("gemma3").join(f).to_string_lossy().into_owned();
    let (model, mmproj, photo) = (q("model.gguf"), q("mmproj.gguf"), q("photo.png"));
    let base = [
        "run",
        "-m",
        model.as_str(),
        "--mmproj",
        mmproj.as_str(),
        "-n",
        "4",
        "--temp",
        "0",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    };

    // Works: chat-templated prompt without a marker gets one image part per image.
    let ok = with(&["--image", photo.as_str(), "-p", "describe", "--json"]);
    let out = mtmd(&argv(&ok));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4, "{v}");
    assert!(
        v["prompt_tokens"].as_u64().unwrap() > 108,
        "image tokens counted: {v}"
    );

    // Marker/image count mismatch.
    fails_with(
        &argv(&with(&[
            "--image",
            photo.as_str(),
            "--raw",
            "-p",
            "a <__media__> b <__media__>",
        ])),
        "2 media marker(s)",
    );
    // Unreadable and corrupt images.
    fails_with(
        &argv(&with(&["--image", "/nonexistent/x.png", "-p", "hi"])),
        "/nonexistent/x.png",
    );
    fails_with(
        &argv(&with(&["--image", model.as_str(), "-p", "hi"])),
        "image",
    );
    // Image without --mmproj.
    fails_with(
        &[
            "run",
            "-m",
            model.as_str(),
            "--image",
            photo.as_str(),
            "-p",
            "hi",
        ],
        "this model takes no images without --mmproj",
    );
    // mmproj of another model (Qwen3-VL rows are wider than gemma3's n_embd).
    let qwen3_mmproj = fixture_dir("qwen3vl")
        .join("mmproj.gguf")
        .to_string_lossy()
        .into_owned();
    let gmodel = g("model.gguf");
    fails_with(
        &[
            "run",
            "-m",
            gmodel.as_str(),
            "--mmproj",
            qwen3_mmproj.as_str(),
            "--image",
            photo.as_str(),
            "-p",
            "hi",
        ],
        "-dim embeddings, text model has n_embd",
    );
    // Unsupported projector, named: the qwen2vl mmproj's metadata with another type.
    let source = gguf::GgufFile::open(fixture_dir("qwen2vl").join("mmproj.gguf")).unwrap();
    let mut w = gguf::GgufWriter::new();
    for (k, v) in source.metadata() {
        w.add_kv(k, v.clone());
    }
    w.add_kv(
        "clip.projector_type",
        gguf::Value::String("llava_next_2000".into()),
    );
    let unknown = std::env::temp_dir().join(format!("unknown-mmproj-{}.gguf", std::process::id()));
    w.write_to(&unknown).unwrap();
    let unknown_s = unknown.to_string_lossy().into_owned();
    fails_with(
        &[
            "run",
            "-m",
            model.as_str(),
            "--mmproj",
            unknown_s.as_str(),
            "--image",
            photo.as_str(),
            "-p",
            "hi",
        ],
        "llava_next_2000",
    );
    let _ = std::fs::remove_file(&unknown);
    // Text-only run still works without --mmproj.
    let out = mtmd(&[
        "run",
        "-m",
        model.as_str(),
        "-p",
        "hi",
        "-n",
        "2",
        "--temp",
        "0",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
