//! `mtmd dump` and `mtmd run` on the fixtures of the second layout (Pixtral, Mistral 3,
//! Qwen2-Audio, Voxtral): chunk list identical to llama.cpp's, media embeddings and last
//! logits within 3e-3 x max|ref|, greedy tokens identical while llama.cpp's margin is clear.
//! Plus the one-line errors for bad audio and a missing model.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use testkit::{RefTensors, fixture, max_err, reference_json};

const REL_TOL: f32 = 3e-3;
const CLEAR_MARGIN: f64 = 5e-2;

fn mtmd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(args)
        .env(
            "MTMD_CACHE_DIR",
            std::env::temp_dir().join("mtmd-media-cli-cache"),
        )
        .env("MTMD_HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .expect("mtmd runs")
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn dump_fixture(arch: &str) {
    let dir = fixture(arch);
    let reference = reference_json(&dir);
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let prompt = std::fs::read_to_string(dir.join("prompt.txt")).unwrap();
    for (name, case) in reference["cases"].as_object().unwrap() {
        let input = dir.join(case["input_file"].as_str().unwrap());
        let audio = case["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "audio");
        let out_path = std::env::temp_dir().join(format!(
            "media_cli_{arch}_{name}_{}.safetensors",
            std::process::id()
        ));
        let (model, mmproj, input, out) = (
            s(&dir.join("model.gguf")),
            s(&dir.join("mmproj.gguf")),
            s(&input),
            s(&out_path),
        );
        let flag = if audio { "--audio" } else { "--image" };
        let args = [
            "dump", "-m", &model, "--mmproj", &mmproj, "-p", &prompt, "--raw", "-n", "16", "--out",
            &out, flag, &input,
        ];
        let run = mtmd(&args);
        assert!(
            run.status.success(),
            "{arch}/{name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        let got: Value = serde_json::from_slice(&run.stdout).expect("one JSON object");
        let chunks = got["chunks"].as_array().unwrap();
        let chunks_ref = case["chunks"].as_array().unwrap();
        assert_eq!(chunks.len(), chunks_ref.len(), "{arch}/{name}: chunk count");
        for (i, (c, r)) in chunks.iter().zip(chunks_ref).enumerate() {
            for key in ["type", "n_tokens", "n_pos"] {
                assert_eq!(c[key], r[key], "{arch}/{name}: chunk {i} {key}");
            }
            if r["type"] == "text" {
                assert_eq!(c["tokens"], r["tokens"], "{arch}/{name}: chunk {i} tokens");
            }
        }
        let ours = RefTensors::load(&out_path);
        let media: Vec<&Value> = chunks_ref.iter().filter(|c| c["type"] != "text").collect();
        for (k, chunk) in media.iter().enumerate() {
            let (err, scale) = max_err(
                ours.get(&format!("embd.{k}")).1,
                refs.get(chunk["embd_tensor"].as_str().unwrap()).1,
            );
            println!(
                "{arch}/{name}: embd.{k} max_abs {err:.3e} rel {:.2e}",
                err / scale
            );
            assert!(err <= REL_TOL * scale, "{arch}/{name}: embd.{k}");
        }
        let (err, scale) = max_err(
            ours.get("logits").1,
            refs.get(case["logits_tensor"].as_str().unwrap()).1,
        );
        println!(
            "{arch}/{name}: logits max_abs {err:.3e} rel {:.2e}",
            err / scale
        );
        assert!(err <= REL_TOL * scale, "{arch}/{name}: logits");
        let margins = case["greedy_top1_minus_top2"].as_array().unwrap();
        for (step, (ours, want)) in got["greedy"]
            .as_array()
            .unwrap()
            .iter()
            .zip(case["greedy_ids"].as_array().unwrap())
            .enumerate()
        {
            if margins[step].as_f64().unwrap() < CLEAR_MARGIN {
                break;
            }
            assert_eq!(ours, want, "{arch}/{name}: greedy step {step}");
        }
        let _ = std::fs::remove_file(&out_path);
    }
}

#[test]
fn dump_pixtral() {
    dump_fixture("pixtral");
}

#[test]
fn dump_mistral3() {
    dump_fixture("mistral3");
}

#[test]
fn dump_qwen2audio() {
    dump_fixture("qwen2audio");
}

#[test]
fn dump_voxtral() {
    dump_fixture("voxtral");
}

/// `mtmd run --audio` through the model's chat template, greedy, as JSON.
#[test]
fn run_audio_chat() {
    let dir = fixture("qwen2audio");
    let (model, mmproj, wav) = (
        s(&dir.join("model.gguf")),
        s(&dir.join("mmproj.gguf")),
        s(&dir.join("speech_a_16k_mono.wav")),
    );
    let args = [
        "run",
        "-m",
        &model,
        "--mmproj",
        &mmproj,
        "--audio",
        &wav,
        "-p",
        "What do you hear?",
        "--temp",
        "0",
        "-n",
        "8",
        "--json",
    ];
    let out = mtmd(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let n = got["tokens"]
        .as_u64()
        .or(got["tokens"].as_array().map(|a| a.len() as u64));
    assert!(n.is_some_and(|n| n <= 8 && n > 0), "{got}");
    // 750 audio rows plus the rendered text.
    assert!(got["prompt_tokens"].as_u64().unwrap() > 750, "{got}");
    // The same run again gives the same answer.
    let again: Value = serde_json::from_slice(&mtmd(&args).stdout).unwrap();
    assert_eq!(got["text"], again["text"]);
}

/// Every bad-audio case is one `error:` line and exit status 1.
#[test]
fn bad_audio_is_one_line_error() {
    let dir = fixture("qwen2audio");
    let tmp = std::env::temp_dir().join(format!("media_cli_bad_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let wav = std::fs::read(dir.join("speech_a_16k_mono.wav")).unwrap();
    let mut zero_channels = wav.clone();
    zero_channels[22..24].copy_from_slice(&0u16.to_le_bytes());
    let mut zero_rate = wav.clone();
    zero_rate[24..28].copy_from_slice(&0u32.to_le_bytes());
    let mut huge = wav.clone();
    let data_at = huge.windows(4).position(|w| w == b"data").unwrap();
    huge[data_at + 4..data_at + 8].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let cases: [(&str, Vec<u8>, &str); 5] = [
        ("zero_channels.wav", zero_channels, "channel"),
        ("zero_rate.wav", zero_rate, "rate"),
        ("huge.wav", huge, ""),
        ("truncated.wav", wav[..wav.len() / 3].to_vec(), ""),
        ("text.wav", b"hello, not audio at all".to_vec(), ""),
    ];
    let (model, mmproj) = (s(&dir.join("model.gguf")), s(&dir.join("mmproj.gguf")));
    for (file, bytes, needle) in cases {
        let path = tmp.join(file);
        std::fs::write(&path, bytes).unwrap();
        let p = s(&path);
        // On the CPU, so that no GPU notice joins the one error line whatever this machine has.
        let out = mtmd(&[
            "run", "-m", &model, "--mmproj", &mmproj, "--audio", &p, "-p", "hi", "--device", "cpu",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        println!("{file}: {}", err.trim());
        assert_eq!(out.status.code(), Some(1), "{file}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{file}: {err}");
        assert!(err.starts_with("error: audio "), "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
    }
    // Longer than --max-audio-seconds: both lengths named.
    let wav = s(&dir.join("speech_a_16k_mono.wav"));
    let out = mtmd(&[
        "run",
        "-m",
        &model,
        "--mmproj",
        &mmproj,
        "--audio",
        &wav,
        "-p",
        "hi",
        "--max-audio-seconds",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("too long: {}", err.trim());
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains('1') && err.contains("2.5"), "{err}");
    // Audio given to an image-only projector.
    let v = fixture("gemma3");
    let out = mtmd(&[
        "run",
        "-m",
        &s(&v.join("model.gguf")),
        "--mmproj",
        &s(&v.join("mmproj.gguf")),
        "--audio",
        &wav,
        "-p",
        "hi",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("audio to a vision mmproj: {}", err.trim());
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("audio"), "{err}");
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Without -m or -hf the default model is fetched; unreachable, that is one line naming -m.
#[test]
fn default_model_unreachable_names_dash_m() {
    let out = mtmd(&["run", "-p", "hi"]);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{}", err.trim());
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("SmolVLM") && err.contains("-m FILE"), "{err}");
    let last = err.trim().lines().last().unwrap();
    assert!(last.starts_with("error: "), "{err}");
}

#[test]
fn dump_idefics3() {
    dump_fixture("idefics3");
}
