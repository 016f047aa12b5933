//! Golden test of chunking and evaluation against llama.cpp's libmtmd, with the encoder
//! replaced by the fixtures' reference embeddings (`<case>.embd.<k>`): the chunk list must
//! match exactly, the last logits within 3e-3 x max|ref|, and 16 greedy steps must agree
//! wherever llama.cpp's argmax margin is clear.

use std::collections::HashMap;
use std::sync::Arc;

use llm::{KvType, Logits, Model};
use mtmd::{
    Bitmap, Chunk, Context, ContextParams, EncoderError, Framing, Media, MediaEncoder, MediaKind,
    PreparedMedia,
};
use serde_json::Value;
use testkit::{RefTensors, fixture, max_err};

const LOGIT_REL_TOL: f32 = 3e-3;
const CLEAR_MARGIN: f64 = 5e-2;

/// Replays reference embeddings: a bitmap's id names its embedding tensor.
struct ReferenceEncoder {
    projector: &'static clip::Projector,
    n_embd: usize,
    /// embd tensor name -> (nx, ny, embeddings)
    images: HashMap<String, (usize, usize, Arc<Vec<f32>>)>,
}

impl MediaEncoder for ReferenceEncoder {
    fn kind(&self) -> MediaKind {
        MediaKind::Image
    }

    fn framing(&self) -> Framing {
        self.projector.framing
    }

    fn non_causal(&self) -> bool {
        self.projector.non_causal
    }

    fn n_embd_out(&self) -> usize {
        self.n_embd
    }

    fn prepare(&self, media: Media<'_>) -> Result<Vec<PreparedMedia>, EncoderError> {
        let (nx, ny, embd) = self
            .images
            .get(media.id())
            .ok_or_else(|| format!("no reference embeddings for '{}'", media.id()))?;
        Ok(vec![PreparedMedia {
            nx: *nx,
            ny: *ny,
            n_tokens: nx * ny,
            place: mtmd::Placement::Whole,
            data: embd.clone(),
        }])
    }

    fn encode(&self, image: &PreparedMedia) -> Result<Vec<f32>, EncoderError> {
        let embd = image
            .data
            .downcast_ref::<Vec<f32>>()
            .ok_or("prepared image is not a reference embedding")?;
        Ok(embd.clone())
    }
}

fn as_usize(v: &Value) -> usize {
    v.as_u64().expect("non-negative integer") as usize
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn check_chunks(case: &str, chunks: &mtmd::Chunks, expected: &[Value]) {
    assert_eq!(chunks.len(), expected.len(), "{case}: chunk count");
    let starts = chunks.pos_starts();
    for (i, (chunk, want)) in chunks.iter().zip(expected).enumerate() {
        let what = format!("{case}: chunk {i}");
        assert_eq!(starts[i], as_usize(&want["pos_start"]), "{what}: pos_start");
        assert_eq!(
            chunk.n_tokens(),
            as_usize(&want["n_tokens"]),
            "{what}: n_tokens"
        );
        assert_eq!(chunk.n_pos(), as_usize(&want["n_pos"]), "{what}: n_pos");
        match (chunk, want["type"].as_str()) {
            (Chunk::Text(tokens), Some("text")) => {
                let ids: Vec<u32> = want["tokens"]
                    .as_array()
                    .expect("tokens")
                    .iter()
                    .map(|t| as_usize(t) as u32)
                    .collect();
                assert_eq!(tokens, &ids, "{what}: text tokens");
            }
            (Chunk::Image(img), Some("image")) => {
                assert_eq!(img.nx(), as_usize(&want["nx"]), "{what}: nx");
                assert_eq!(img.ny(), as_usize(&want["ny"]), "{what}: ny");
                assert_eq!(img.media_index, as_usize(&want["media_index"]), "{what}");
                let txy: Vec<[i32; 3]> = want["decoder_pos_txy"]
                    .as_array()
                    .expect("decoder_pos_txy")
                    .iter()
                    .map(|p| {
                        let p = p.as_array().expect("txy triple");
                        [0, 1, 2].map(|k| p[k].as_i64().expect("int") as i32)
                    })
                    .collect();
                assert_eq!(img.relative_txy(), txy, "{what}: decoder positions");
            }
            (_, ty) => panic!("{what}: chunk kind differs (reference: {ty:?})"),
        }
    }
}

fn run_fixture(arch: &str, projector: &str) {
    let dir = fixture(arch);
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).expect("reference.json"),
    )
    .expect("reference.json parses");
    let tensors = RefTensors::load(&dir.join("reference.safetensors"));
    let model = Arc::new(Model::load(dir.join("model.gguf")).expect("model loads"));
    let n_embd = model.hparams().n_embd_inp();
    assert_eq!(n_embd, as_usize(&reference["n_embd_inp"]));
    let n_vocab = as_usize(&reference["n_vocab"]);

    // Every image chunk of every case, keyed by its embedding tensor.
    let mut images = HashMap::new();
    let cases = reference["cases"].as_object().expect("cases");
    for case in cases.values() {
        for chunk in case["chunks"].as_array().expect("chunks") {
            if chunk["type"] == "image" {
                let name = chunk["embd_tensor"]
                    .as_str()
                    .expect("embd_tensor")
                    .to_string();
                let embd = Arc::new(tensors.f32s(&name));
                images.insert(name, (as_usize(&chunk["nx"]), as_usize(&chunk["ny"]), embd));
            }
        }
    }
    let encoder = ReferenceEncoder {
        projector: clip::registry::lookup(projector).expect("known projector"),
        n_embd,
        images,
    };
    let ctx = Context::with_encoder(model.clone(), Box::new(encoder), ContextParams::default())
        .expect("context");

    for (name, case) in cases {
        let prompt = std::fs::read_to_string(dir.join(case["prompt_file"].as_str().unwrap()))
            .expect("prompt");
        let chunks_ref = case["chunks"].as_array().unwrap();
        let bitmaps: Vec<Bitmap> = chunks_ref
            .iter()
            .filter(|c| c["type"] == "image")
            .map(|c| {
                Bitmap::from_rgb(1, 1, vec![0, 0, 0])
                    .unwrap()
                    .with_id(c["embd_tensor"].as_str().unwrap())
            })
            .collect();
        let refs: Vec<&Bitmap> = bitmaps.iter().collect();
        let chunks = ctx.tokenize(&prompt, &refs).expect("tokenize");
        check_chunks(name, &chunks, chunks_ref);
        assert_eq!(
            chunks.n_tokens(),
            as_usize(&case["n_prompt_tokens"]),
            "{name}"
        );

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
        println!(
            "{arch}/{name}: prompt logits max_abs {err:.3e} (max|ref| {scale:.2}, rel {:.2e})",
            err / scale
        );
        assert!(err <= LOGIT_REL_TOL * scale, "{arch}/{name}: prompt logits");

        // Greedy: feed llama.cpp's tokens so every row of greedy_logits is comparable; our
        // argmax must agree wherever its margin was clear.
        let greedy_ref = tensors.f32s(case["greedy_logits_tensor"].as_str().unwrap());
        let tokens: Vec<u32> = case["greedy_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| as_usize(t) as u32)
            .collect();
        let margins: Vec<f64> = case["greedy_top1_minus_top2"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let mut step_logits = logits;
        let (mut worst, mut worst_rel) = (0f32, 0f32);
        let mut agreed = 0;
        for (step, &token) in tokens.iter().enumerate() {
            let row = &greedy_ref[step * n_vocab..(step + 1) * n_vocab];
            let (err, scale) = max_err(&step_logits, row);
            worst = worst.max(err);
            worst_rel = worst_rel.max(err / scale);
            assert!(
                err <= LOGIT_REL_TOL * scale,
                "{arch}/{name}: greedy step {step}: logits max_abs {err} (max|ref| {scale})"
            );
            if margins[step] >= CLEAR_MARGIN {
                assert_eq!(
                    argmax(&step_logits) as u32,
                    token,
                    "{arch}/{name}: greedy step {step} (margin {})",
                    margins[step]
                );
                agreed += 1;
            }
            if step + 1 < tokens.len() {
                step_logits = session
                    .decode_tokens(&model, &[token], Logits::Last)
                    .expect("greedy step");
            }
        }
        println!(
            "{arch}/{name}: greedy logits worst max_abs {worst:.3e} (rel {worst_rel:.2e}), \
             argmax agrees on {agreed} clear-margin steps of {}",
            tokens.len()
        );
    }
}

#[test]
fn gemma3_reference_embeddings() {
    run_fixture("gemma3", "gemma3");
}

#[test]
fn qwen2vl_reference_embeddings() {
    run_fixture("qwen2vl", "qwen2vl_merger");
}

#[test]
fn qwen25vl_reference_embeddings() {
    run_fixture("qwen25vl", "qwen2.5vl_merger");
}

#[test]
fn qwen3vl_reference_embeddings() {
    run_fixture("qwen3vl", "qwen3vl_merger");
}
