//! `mtmd dump`: the multimodal prompt's chunks, media embeddings, last logits and greedy
//! tokens, for comparing against llama.cpp's libmtmd (golden tests, debugging).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use llm::Logits;
use mtmd::Chunk;
use serde_json::{Value, json};

use super::common::load_model;
use super::media::{MediaArgs, check_marker_count, user_message};
use super::model_args::ModelArgs;
use super::runtime_args::RuntimeArgs;

#[derive(ClapArgs)]
#[command(mut_arg("kv_type", |a| a
    .default_value("f32")
    .help("KV cache type (f32 matches the references)")))]
#[command(mut_arg("ctx_size", |a| a.default_value("2048").help("Context size in tokens")))]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt (one user message through the chat template unless --raw).
    #[arg(short = 'p', long)]
    prompt: String,
    /// Use the prompt as is: no chat template, markers already in place.
    #[arg(long)]
    raw: bool,
    /// Greedy tokens to generate after the prompt (never stopping at end-of-generation).
    #[arg(short = 'n', long, default_value_t = 16)]
    n_predict: usize,
    /// Safetensors file for `embd.K` (K-th media chunk) and `logits` (last prompt position).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    media: MediaArgs,
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

pub fn run(args: Args) -> Result<()> {
    args.runtime.compute.apply()?;
    let resolved = args.model.resolve(true)?;
    let mmproj = resolved.mmproj.as_deref();
    args.media.check(mmproj)?;
    if mmproj.is_none() {
        bail!("dump needs --mmproj");
    }
    let kinds = args.media.kinds();
    let model = Arc::new(load_model(&resolved.model, &args.runtime.compute)?);
    let text = if args.raw {
        args.prompt.clone()
    } else {
        model.apply_chat(&[user_message(&args.prompt, &kinds)], true)?
    };
    check_marker_count(&text, kinds.len())?;
    let media = args.media.load()?;
    let Some(ctx) = args.media.context(
        mmproj,
        &model,
        args.runtime.threads(),
        args.runtime.compute.encoder_device()?,
    )?
    else {
        bail!("dump needs --mmproj");
    };
    let chunks = ctx.tokenize(&text, &media.iter().collect::<Vec<_>>())?;
    let mut session = model.new_session(args.runtime.ctx_size, args.runtime.kv_type())?;
    if chunks.n_tokens() + args.n_predict > session.n_ctx() {
        bail!(
            "prompt ({} tokens) plus {} generated do not fit the context of {} (use a larger -c)",
            chunks.n_tokens(),
            args.n_predict,
            session.n_ctx()
        );
    }

    let mut embeddings: Vec<Vec<f32>> = Vec::new();
    let out = mtmd::eval_chunks(
        &model,
        &mut session,
        &chunks,
        |img| {
            let embd = ctx.encode(img)?;
            embeddings.push(embd.clone());
            Ok(embd)
        },
        true,
    )?;
    let Some(logits) = out.logits else {
        bail!("the prompt must end with text after the last media item");
    };

    let mut greedy = Vec::with_capacity(args.n_predict);
    let mut step_logits = logits.clone();
    for step in 0..args.n_predict {
        let token = argmax(&step_logits);
        greedy.push(token);
        if step + 1 < args.n_predict {
            step_logits = session.decode_tokens(&model, &[token], Logits::Last)?;
        }
    }

    let n_embd = model.hparams().n_embd_inp();
    let names: Vec<String> = (0..embeddings.len()).map(|k| format!("embd.{k}")).collect();
    let shapes: Vec<[usize; 2]> = embeddings
        .iter()
        .map(|e| [e.len() / n_embd.max(1), n_embd])
        .collect();
    let logits_shape = [logits.len()];
    let mut tensors: Vec<(&str, &[usize], &[f32])> = names
        .iter()
        .zip(&shapes)
        .zip(&embeddings)
        .map(|((n, s), e)| (n.as_str(), &s[..], e.as_slice()))
        .collect();
    tensors.push(("logits", &logits_shape[..], logits.as_slice()));
    tensor::safetensors::write_f32(&args.out, &tensors)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.out.display()))?;

    let chunk_list: Vec<Value> = chunks
        .iter()
        .map(|chunk| match chunk {
            Chunk::Text(tokens) => json!({
                "type": "text", "n_tokens": chunk.n_tokens(), "n_pos": chunk.n_pos(), "tokens": tokens,
            }),
            Chunk::Image(img) => json!({
                "type": "image", "n_tokens": chunk.n_tokens(), "n_pos": chunk.n_pos(),
                "nx": img.nx(), "ny": img.ny(),
            }),
            Chunk::Audio(_) => json!({
                "type": "audio", "n_tokens": chunk.n_tokens(), "n_pos": chunk.n_pos(),
            }),
            _ => json!({"type": "other", "n_tokens": chunk.n_tokens(), "n_pos": chunk.n_pos()}),
        })
        .collect();
    println!("{}", json!({"chunks": chunk_list, "greedy": greedy}));
    Ok(())
}
