//! Describe an image: `cargo run -p mtmd --example describe -- MODEL.gguf MMPROJ.gguf IMAGE [PROMPT]`.
//!
//! Loads the text model and its mmproj, puts the image before the prompt (llama.cpp's chat
//! templates render an image part as the media marker; here the marker is written directly),
//! evaluates the chunks and then samples greedily until end of generation or 128 tokens.

use std::sync::Arc;

use llm::generate::{GenerateParams, continue_generation};
use llm::sampling::SamplingParams;
use llm::{KvType, Model};
use mtmd::{Bitmap, Context, ContextParams, DEFAULT_MEDIA_MARKER};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, mmproj_path, image_path, rest @ ..] = args.as_slice() else {
        eprintln!("usage: describe MODEL.gguf MMPROJ.gguf IMAGE [PROMPT]");
        std::process::exit(2);
    };
    let prompt = rest.first().map_or("Describe this image.", String::as_str);

    let model = Arc::new(Model::load(model_path)?);
    let ctx = Context::new(mmproj_path, model.clone(), ContextParams::default())?;
    let image = Bitmap::from_file(image_path)?;

    let text = format!("{DEFAULT_MEDIA_MARKER}\n{prompt}");
    let chunks = ctx.tokenize(&text, &[&image])?;
    let mut session = model.new_session(0, KvType::F16)?;
    let out = ctx.eval_chunks(&mut session, &chunks, true)?;
    let logits = out.logits.ok_or("the prompt must end with text")?;

    let params = GenerateParams {
        max_tokens: 128,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        ..GenerateParams::default()
    };
    let mut print = |piece: &str| {
        print!("{piece}");
        true
    };
    continue_generation(
        &model,
        &mut session,
        logits,
        chunks.n_tokens(),
        &params,
        &mut print,
    )?;
    println!();
    Ok(())
}
