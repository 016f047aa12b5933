//! `mtmd run`: one prompt (or a whole conversation) in, generated text out.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args as ClapArgs;
use llm::GenerateParams;
use llm::chat::ChatMessage;

use super::common::load_model;
use super::media::{MediaArgs, check_marker_count, user_message};
use super::model_args::ModelArgs;
use super::runtime_args::RuntimeArgs;
use super::sampling_args::SamplingArgs;

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The prompt: one user message, rendered through the chat template (unless --raw).
    #[arg(short = 'p', long, conflicts_with = "messages")]
    prompt: Option<String>,
    /// A JSON file with an array of OpenAI-style {role, content} messages: the whole conversation.
    #[arg(long)]
    messages: Option<PathBuf>,
    /// System message put before the prompt.
    #[arg(long)]
    system: Option<String>,
    /// Tokenize the prompt as is (BOS per the model, special tokens parsed), no chat template.
    #[arg(long, conflicts_with = "messages")]
    raw: bool,
    /// Tokens to generate (-1: until the model ends its answer or the context is full).
    #[arg(short = 'n', long, default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    media: MediaArgs,
}

pub fn run(args: Args) -> Result<()> {
    args.runtime.compute.apply()?;
    let kinds = args.media.kinds();
    let messages = match (&args.prompt, &args.messages) {
        (_, Some(path)) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
            let msgs: Vec<ChatMessage> = serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}: expected a JSON array of {{role, content}} messages",
                    path.display()
                )
            })?;
            if msgs.is_empty() {
                bail!("{}: the conversation is empty", path.display());
            }
            Some(msgs)
        }
        (Some(_), None) if args.raw => None,
        (Some(p), None) => {
            let mut msgs = Vec::new();
            if let Some(s) = &args.system {
                msgs.push(ChatMessage::system(s.as_str()));
            }
            msgs.push(user_message(p, &kinds));
            Some(msgs)
        }
        (None, None) => bail!("give a prompt with -p or a conversation with --messages"),
    };

    // After the prompt checks, so that a bad command line downloads nothing.
    let resolved = args.model.resolve_or_default(true)?;
    let mmproj = resolved.mmproj.as_deref();
    args.media.check(mmproj)?;
    let model = Arc::new(load_model(&resolved.model, &args.runtime.compute)?);
    let text = match &messages {
        Some(msgs) => model.apply_chat(msgs, true)?,
        None => args.prompt.clone().unwrap_or_default(),
    };
    if let Some(mmproj) = mmproj {
        check_marker_count(&text, kinds.len())?;
        return run_multimodal(&args, mmproj, &model, &text);
    }
    let prompt = model.tokenizer.tokenize(&text, true, true);
    if prompt.is_empty() {
        bail!("the prompt is empty after tokenization");
    }
    let mut session = model.new_session(args.runtime.ctx_size, args.runtime.kv_type())?;
    if prompt.len() >= session.n_ctx() {
        bail!(
            "the prompt has {} tokens, the context holds {} (use a larger -c)",
            prompt.len(),
            session.n_ctx()
        );
    }
    let max_tokens = if args.n_predict < 0 {
        session.n_ctx() - prompt.len()
    } else {
        args.n_predict as usize
    };
    let params = generate_params(&args, max_tokens);
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    let out = llm::generate(&model, &mut session, &prompt, &params, |piece| {
        if !json {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
        true
    })?;
    finish(&mut stdout, json, prompt.len(), &out)
}

fn generate_params(args: &Args, max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        sampling: args.sampling.params(),
        stop: args.stop.clone(),
        ignore_eog: false,
    }
}

fn finish(
    stdout: &mut impl Write,
    json: bool,
    prompt_tokens: usize,
    out: &llm::Generation,
) -> Result<()> {
    if json {
        let obj = serde_json::json!({
            "prompt_tokens": prompt_tokens,
            "tokens": out.tokens,
            "text": out.text,
            "finish_reason": out.finish.as_str(),
        });
        writeln!(stdout, "{obj}")?;
    } else {
        writeln!(stdout)?;
    }
    Ok(())
}

/// Prompt with media: chunks through the mtmd context, then sampling continues from the
/// logits of the last chunk.
fn run_multimodal(
    args: &Args,
    mmproj: &std::path::Path,
    model: &Arc<llm::Model>,
    text: &str,
) -> Result<()> {
    let media = args.media.load()?;
    let Some(ctx) = args.media.context(
        Some(mmproj),
        model,
        args.runtime.threads(),
        args.runtime.compute.encoder_device()?,
    )?
    else {
        bail!("--mmproj is required for images and audio");
    };
    let chunks = ctx.tokenize(text, &media.iter().collect::<Vec<_>>())?;
    let mut session = model.new_session(args.runtime.ctx_size, args.runtime.kv_type())?;
    let n_prompt = chunks.n_tokens();
    if n_prompt == 0 {
        bail!("the prompt is empty after tokenization");
    }
    if n_prompt >= session.n_ctx() {
        bail!(
            "the prompt has {n_prompt} tokens (media included), the context holds {} (use a larger -c)",
            session.n_ctx()
        );
    }
    let out = ctx.eval_chunks(&mut session, &chunks, true)?;
    let Some(logits) = out.logits else {
        bail!("the prompt must end with text after the last media item");
    };
    let max_tokens = if args.n_predict < 0 {
        session.n_ctx() - n_prompt
    } else {
        args.n_predict as usize
    };
    let params = generate_params(args, max_tokens);
    let json = args.json;
    let mut stdout = std::io::stdout().lock();
    let gen_out = {
        let mut on_text = |piece: &str| {
            if !json {
                let _ = stdout.write_all(piece.as_bytes());
                let _ = stdout.flush();
            }
            true
        };
        llm::generate::continue_generation(
            model,
            &mut session,
            logits,
            n_prompt,
            &params,
            &mut on_text,
        )?
    };
    finish(&mut stdout, json, n_prompt, &gen_out)
}
