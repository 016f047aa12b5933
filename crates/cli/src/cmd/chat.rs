//! `mtmd chat`: an interactive conversation on stdin/stdout. `/image PATH` and `/audio PATH`
//! attach an image or an audio clip to the next message, `/clear` starts over, `/quit` (or end of input) leaves. The whole
//! history goes through the chat template every turn; the KV cache keeps the part of the
//! previous prompt that is unchanged, so only the new suffix is evaluated.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Result, anyhow, bail};
use clap::Args as ClapArgs;
use llm::chat::{ChatMessage, ContentPart, MessageContent};
use llm::{GenerateParams, Logits, Model, Session};
use mtmd::{
    CellKey, Chunk, Chunks, MediaItem, MediaKind, chunk_keys, chunks_after, reusable_prefix,
};

use super::common::load_model;
use super::media::{MediaArgs, load_audio, load_image, media_part};
use super::model_args::ModelArgs;
use super::runtime_args::RuntimeArgs;
use super::sampling_args::SamplingArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// --mmproj is needed for `/image` and `/audio`.
    #[command(flatten)]
    model: ModelArgs,
    /// --image and --audio files go with the first message.
    #[command(flatten)]
    media: MediaArgs,
    /// System message that starts every conversation.
    #[arg(long)]
    system: Option<String>,
    /// Tokens to generate per answer (-1: until the model ends it or the context is full).
    #[arg(short = 'n', long, default_value_t = -1, allow_negative_numbers = true)]
    n_predict: i64,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Print per-turn statistics ("prompt: evaluated N of M tokens") on stderr.
    #[arg(long)]
    verbose: bool,
}

/// One conversation: its messages, media, and what the KV cache holds of it.
struct Chat {
    model: Arc<Model>,
    media: Option<mtmd::Context>,
    session: Session,
    system: Option<String>,
    history: Vec<ChatMessage>,
    /// Media of `history`, in order of appearance.
    images: Vec<MediaItem>,
    /// Media attached with `/image` or `/audio` for the next message.
    pending: Vec<MediaItem>,
    max_audio_seconds: f64,
    cached: Vec<CellKey>,
    params: GenerateParams,
    n_predict: i64,
    verbose: bool,
}

impl Chat {
    fn clear(&mut self) {
        self.history.clear();
        if let Some(s) = &self.system {
            self.history.push(ChatMessage::system(s.as_str()));
        }
        self.images.clear();
        self.pending.clear();
        self.session.clear();
        self.cached.clear();
    }

    fn attach(&mut self, kind: MediaKind, path: &str) -> Result<()> {
        let Some(ctx) = &self.media else {
            match kind {
                MediaKind::Image => bail!("images need a vision projector: start with --mmproj"),
                MediaKind::Audio => bail!("audio needs an audio projector: start with --mmproj"),
            }
        };
        if !ctx.supports(kind) {
            bail!("this mmproj does not take {}", kind.name());
        }
        let path = std::path::Path::new(path);
        let item = match kind {
            MediaKind::Image => load_image(path)?,
            MediaKind::Audio => load_audio(path, self.max_audio_seconds)?,
        };
        self.pending.push(item);
        Ok(())
    }

    /// Tokenizes the whole conversation into chunks (one text chunk without a projector).
    fn tokenize(&self, text: &str, media: &[MediaItem]) -> Result<Chunks> {
        match &self.media {
            Some(ctx) => Ok(ctx.tokenize(text, &media.iter().collect::<Vec<_>>())?),
            None => Ok(Chunks {
                chunks: vec![Chunk::Text(self.model.tokenizer.tokenize(text, true, true))],
            }),
        }
    }

    /// One user message in, the streamed answer out. On error the conversation is as before.
    fn turn(&mut self, text: &str, out: &mut dyn Write) -> Result<()> {
        let content = if self.pending.is_empty() {
            MessageContent::Text(text.to_string())
        } else {
            let mut parts: Vec<ContentPart> =
                self.pending.iter().map(|m| media_part(m.kind())).collect();
            parts.push(ContentPart::text(text));
            MessageContent::Parts(parts)
        };
        let mut messages = self.history.clone();
        messages.push(ChatMessage::with_content("user", content));
        let mut images = self.images.clone();
        images.extend(self.pending.iter().cloned());
        self.pending.clear();

        let rendered = self.model.apply_chat(&messages, true)?;
        let chunks = self.tokenize(&rendered, &images)?;
        let n_prompt = chunks.n_tokens();
        if n_prompt == 0 {
            bail!("the prompt is empty after tokenization");
        }
        if n_prompt >= self.session.n_ctx() {
            bail!(
                "the conversation has {n_prompt} tokens, the context holds {} (/clear or use a larger -c)",
                self.session.n_ctx()
            );
        }
        let keys = chunk_keys(&chunks);
        let keep = reusable_prefix(&self.cached, &keys);
        self.session.truncate(keep);
        self.cached.truncate(keep);
        let suffix = chunks_after(&chunks, keep);
        let evaluated = n_prompt - keep;
        let logits = match self.evaluate(&suffix) {
            Ok(l) => l,
            Err(e) => {
                // The cache may hold part of the suffix: forget it rather than trust it.
                self.session.truncate(keep);
                return Err(e);
            }
        };
        self.cached = keys;
        if self.verbose {
            eprintln!("prompt: evaluated {evaluated} of {n_prompt} tokens");
        }

        let room = self.session.n_ctx() - self.session.n_tokens();
        let mut params = self.params.clone();
        params.max_tokens = if self.n_predict < 0 {
            room
        } else {
            self.n_predict as usize
        };
        let generation = llm::generate::continue_generation(
            &self.model,
            &mut self.session,
            logits,
            evaluated,
            &params,
            &mut |piece| {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
                true
            },
        )?;
        writeln!(out)?;
        // Every generated token but the last one went through the decoder.
        let decoded = self.session.n_tokens().saturating_sub(self.cached.len());
        self.cached.extend(
            generation
                .tokens
                .iter()
                .take(decoded)
                .map(|&t| CellKey::Token(t)),
        );
        if self.verbose {
            eprintln!(
                "answer: {} tokens ({})",
                generation.tokens.len(),
                generation.finish.as_str()
            );
        }
        self.history = messages;
        self.history.push(ChatMessage::assistant(generation.text));
        self.images = images;
        Ok(())
    }

    /// Evaluates `suffix` after what the session holds; returns the last token's logits.
    fn evaluate(&mut self, suffix: &Chunks) -> Result<Vec<f32>> {
        let logits = match &self.media {
            Some(ctx) => ctx.eval_chunks(&mut self.session, suffix, true)?.logits,
            None => {
                let tokens: Vec<u32> = suffix
                    .iter()
                    .filter_map(|c| match c {
                        Chunk::Text(t) => Some(t.as_slice()),
                        _ => None,
                    })
                    .flatten()
                    .copied()
                    .collect();
                Some(
                    self.session
                        .decode_tokens(&self.model, &tokens, Logits::Last)?,
                )
            }
        };
        logits.ok_or_else(|| anyhow!("the prompt does not end with text"))
    }
}

pub fn run(args: Args) -> Result<()> {
    args.runtime.compute.apply()?;
    let resolved = args.model.resolve_or_default(true)?;
    let mmproj = resolved.mmproj.as_deref();
    args.media.check(mmproj)?;
    let first_media = args.media.load()?;
    let model = Arc::new(load_model(&resolved.model, &args.runtime.compute)?);
    let media = args.media.context(
        mmproj,
        &model,
        args.runtime.threads(),
        args.runtime.compute.encoder_device()?,
    )?;
    let session = model.new_session(args.runtime.ctx_size, args.runtime.kv_type())?;
    let mut chat = Chat {
        model,
        media,
        session,
        system: args.system.clone(),
        history: Vec::new(),
        images: Vec::new(),
        pending: Vec::new(),
        max_audio_seconds: args.media.max_audio_seconds,
        cached: Vec::new(),
        params: GenerateParams {
            max_tokens: 0,
            sampling: args.sampling.params(),
            stop: Vec::new(),
            ignore_eog: false,
        },
        n_predict: args.n_predict,
        verbose: args.verbose,
    };
    chat.clear();
    chat.pending = first_media;

    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut stdout = std::io::stdout();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            print!("> ");
            stdout.flush()?;
        }
        let Some(line) = lines.next() else { break };
        let line = line?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let result = if line == "/quit" || line == "/exit" {
            break;
        } else if line == "/clear" {
            chat.clear();
            Ok(())
        } else if let Some(path) = line.strip_prefix("/image ") {
            chat.attach(MediaKind::Image, path.trim())
        } else if let Some(path) = line.strip_prefix("/audio ") {
            chat.attach(MediaKind::Audio, path.trim())
        } else {
            chat.turn(line, &mut stdout)
        };
        if let Err(e) = result {
            let msg: Vec<String> = format!("{e:#}")
                .split_whitespace()
                .map(String::from)
                .collect();
            eprintln!("error: {}", msg.join(" "));
        }
    }
    Ok(())
}
