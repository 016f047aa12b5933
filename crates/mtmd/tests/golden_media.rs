//! End-to-end golden test for the fixtures of the second layout (pixtral, mistral3, idefics3,
//! qwen2audio, voxtral, and the families that follow): the case's image or audio file through
//! `Context::tokenize` (chunk kinds, token ids, token and position counts exact; an Idefics3
//! image is 13 chunks, the k-th compared with `<case>.embd.<k>`), each media chunk's embeddings and the last
//! logits within 3e-3 x max|ref|, 16 greedy steps identical while llama.cpp's top-2 margin is
//! at least 5e-2, and every teacher-forced greedy step's logits within the same bound.

use llm::{KvType, Logits};
use mtmd::{Audio, Bitmap, Chunk, Context, DecodeOptions, Media};
use serde_json::Value;
use testkit::{RefTensors, argmax, fixture, max_err, reference_json};

const REL_TOL: f32 = 3e-3;
const CLEAR_MARGIN: f64 = 5e-2;

/// The media item of a case, owned.
enum Loaded {
    Image(Bitmap),
    Audio(Audio),
}

impl Loaded {
    fn as_media(&self) -> Media<'_> {
        match self {
            Loaded::Image(b) => Media::Image(b),
            Loaded::Audio(a) => Media::Audio(a),
        }
    }
}

/// The case name a reference tensor is prefixed with (its logits tensor's prefix).
fn name_of(case: &Value) -> &str {
    let logits = case["logits_tensor"].as_str().unwrap();
    logits.strip_suffix(".logits").unwrap_or(logits)
}

fn as_usize(v: &Value) -> usize {
    v.as_u64().expect("non-negative integer") as usize
}

fn check_chunks(name: &str, chunks: &mtmd::Chunks, want: &[Value]) {
    assert_eq!(chunks.len(), want.len(), "{name}: chunk count");
    let starts = chunks.pos_starts();
    for ((chunk, want), start) in chunks.iter().zip(want).zip(starts) {
        assert_eq!(chunk.n_tokens(), as_usize(&want["n_tokens"]), "{name}");
        assert_eq!(chunk.n_pos(), as_usize(&want["n_pos"]), "{name}");
        assert_eq!(start, as_usize(&want["pos_start"]), "{name}");
        match (chunk, want["type"].as_str()) {
            (Chunk::Text(tokens), Some("text")) => {
                let ids: Vec<u32> = want["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_u64().unwrap() as u32)
                    .collect();
                assert_eq!(tokens, &ids, "{name}: text chunk {}", want["text"]);
            }
            (Chunk::Audio(clip), Some("audio")) => {
                assert_eq!(
                    clip.n_tokens(),
                    as_usize(&want["n_tokens"]),
                    "{name}: audio"
                );
            }
            (Chunk::Image(img), Some("image")) => {
                assert_eq!(
                    (img.nx(), img.ny()),
                    (as_usize(&want["nx"]), as_usize(&want["ny"])),
                    "{name}: grid"
                );
            }
            (chunk, kind) => panic!("{name}: chunk {chunk:?} where llama.cpp has {kind:?}"),
        }
    }
}

mod support;
use support::{Place, load_model};

fn run_fixture(arch: &str) {
    run_fixture_on(arch, Place::Cpu);
}

fn run_fixture_on(arch: &str, place: Place) {
    let dir = fixture(arch);
    let reference = reference_json(&dir);
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
    let prompt = std::fs::read_to_string(dir.join("prompt.txt")).expect("prompt.txt");

    for (name, case) in reference["cases"].as_object().expect("cases") {
        let name = format!("{arch}/{name}");
        let input = dir.join(case["input_file"].as_str().unwrap());
        let media = if ctx.supports_audio() {
            Loaded::Audio(
                Audio::from_file(&input, &DecodeOptions::default()).expect("audio decodes"),
            )
        } else {
            Loaded::Image(Bitmap::from_file(&input).expect("image decodes"))
        };
        if let (Loaded::Audio(clip), Some(pcm)) =
            (&media, tensors.opt(&format!("{}.pcm.0", name_of(case))))
        {
            let (err, _) = max_err(&clip.pcm().samples, pcm);
            println!("{name}: pcm max_abs {err:.3e}");
            assert!(err <= 1e-6, "{name}: decoded PCM");
        }
        let chunks = ctx
            .tokenize(&prompt, &[media.as_media()])
            .expect("tokenize");
        check_chunks(&name, &chunks, case["chunks"].as_array().unwrap());
        assert_eq!(
            chunks.n_tokens(),
            as_usize(&case["n_prompt_tokens"]),
            "{name}"
        );

        for (chunk, want) in chunks.iter().zip(case["chunks"].as_array().unwrap()) {
            if let Some(m) = chunk.as_media() {
                let embd = ctx.encode(m).expect("encode");
                let (err, scale) =
                    max_err(&embd, &tensors.f32s(want["embd_tensor"].as_str().unwrap()));
                println!("{name}: embd max_abs {err:.3e} rel {:.2e}", err / scale);
                assert!(err <= REL_TOL * scale, "{name}: embeddings");
            }
        }

        let mut session = model.new_session(2048, KvType::F32).unwrap();
        let out = ctx.eval_chunks(&mut session, &chunks, true).expect("eval");
        assert_eq!(
            out.n_past as usize,
            as_usize(&case["n_past_after_prompt"]),
            "{name}: n_past"
        );
        let logits = out.logits.expect("prompt ends with text");
        let ref_logits = tensors.f32s(case["logits_tensor"].as_str().unwrap());
        let (err, scale) = max_err(&logits, &ref_logits);
        println!("{name}: logits max_abs {err:.3e} rel {:.2e}", err / scale);
        assert!(err <= REL_TOL * scale, "{name}: logits");

        // Free-running greedy: identical while the reference's margin is clear.
        let want: Vec<u32> = case["greedy_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let margins: Vec<f64> = case["greedy_top1_minus_top2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let mut free = model.new_session(2048, KvType::F32).unwrap();
        ctx.eval_chunks(&mut free, &chunks, true).expect("eval");
        let mut next = logits.clone();
        let mut agreed = 0;
        for (step, &id) in want.iter().enumerate() {
            let ours = argmax(&next) as u32;
            if margins[step] < CLEAR_MARGIN {
                break;
            }
            assert_eq!(ours, id, "{name}: greedy step {step}");
            agreed += 1;
            next = free
                .decode_tokens(&model, &[ours], Logits::Last)
                .expect("decode");
        }
        println!(
            "{name}: greedy {agreed}/{} identical before a close call",
            want.len()
        );

        // Teacher-forced: the reference's tokens in, every step's logits compared.
        if let Some(name_t) = case["greedy_logits_tensor"].as_str() {
            let rows = tensors.f32s(name_t);
            let n_vocab = ref_logits.len();
            let mut next = logits;
            let mut worst = 0f32;
            for (step, &id) in want.iter().enumerate() {
                let (err, scale) = max_err(&next, &rows[step * n_vocab..(step + 1) * n_vocab]);
                worst = worst.max(err / scale);
                assert!(err <= REL_TOL * scale, "{name}: teacher-forced step {step}");
                next = session
                    .decode_tokens(&model, &[id], Logits::Last)
                    .expect("decode");
            }
            println!("{name}: teacher-forced 16 steps, worst rel {worst:.2e}");
        }
    }
}

#[test]
fn pixtral_full() {
    run_fixture("pixtral");
}

#[test]
fn mistral3_full() {
    run_fixture("mistral3");
}

#[test]
fn qwen2audio_full() {
    run_fixture("qwen2audio");
}

#[test]
fn voxtral_full() {
    run_fixture("voxtral");
}

#[test]
fn idefics3_full() {
    run_fixture("idefics3");
}

// The same cases with the text model on the GPU (every layer and the output head), and split
// in the middle (llama.cpp's -ngl with half the layers).

#[test]
fn pixtral_full_gpu() {
    run_fixture_on("pixtral", Place::Gpu(None));
}

#[test]
fn mistral3_full_gpu() {
    run_fixture_on("mistral3", Place::Gpu(None));
}

/// The Whisper tower on the GPU too (its 1500-frame attention through the tiled kernel).
#[test]
fn qwen2audio_full_gpu() {
    run_fixture_on("qwen2audio", Place::Gpu(None));
}

/// Text model only: the same Whisper blocks as qwen2audio, which covers them on the GPU.
#[test]
fn voxtral_full_gpu() {
    run_fixture_on("voxtral", Place::GpuText(None));
}

#[test]
fn idefics3_full_gpu() {
    run_fixture_on("idefics3", Place::Gpu(None));
}

#[test]
fn idefics3_split_gpu() {
    run_fixture_on("idefics3", Place::Gpu(Some(1)));
}
