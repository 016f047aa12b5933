//! The generation loop: prompt -> sampled tokens -> streamed text, with stop strings,
//! end-of-generation tokens and a token limit.

use crate::batch::Logits;
use crate::error::{LlmError, Result};
use crate::model::{Model, Session};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use crate::tokenizer::StreamDecoder;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Keep going through end-of-generation tokens (golden tests do).
    pub ignore_eog: bool,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            ignore_eog: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// The token limit or the context size.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Generation {
    /// Tokens evaluated for the prompt (excluding the reused prefix).
    pub prompt_evaluated: usize,
    /// Generated ids, including a final end-of-generation token when that ended it.
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: FinishReason,
}

/// Evaluates `prompt` (reusing what the session already holds of it) and samples up to
/// `params.max_tokens` tokens. `on_text` receives text as soon as it is final (never a
/// partial UTF-8 character, never part of a stop string) and returns false to cancel.
pub fn generate(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    params: &GenerateParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(LlmError::BadBatch("empty prompt".into()));
    }
    if prompt.len() >= session.n_ctx() {
        return Err(LlmError::ContextFull {
            needed: prompt.len() + 1,
            n_ctx: session.n_ctx(),
        });
    }
    let reused = session.reuse_prefix(prompt);
    let logits = session.decode_tokens(model, &prompt[reused..], Logits::Last)?;
    continue_generation(
        model,
        session,
        logits,
        prompt.len() - reused,
        params,
        &mut on_text,
    )
}

/// Samples from `logits` (the last position of what the session holds) onwards.
pub fn continue_generation(
    model: &Model,
    session: &mut Session,
    mut logits: Vec<f32>,
    prompt_evaluated: usize,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut sampler = Sampler::new(params.sampling.clone());
    let mut stops = StopMatcher::new(params.stop.iter().cloned());
    let mut pieces = StreamDecoder::new(&model.tokenizer, false);
    let mut out = Generation {
        prompt_evaluated,
        tokens: Vec::new(),
        text: String::new(),
        finish: FinishReason::Length,
    };
    let mut emit = |text: &str, out: &mut Generation| -> bool {
        if text.is_empty() {
            return true;
        }
        out.text.push_str(text);
        on_text(text)
    };
    while out.tokens.len() < params.max_tokens {
        let token = sampler.sample(&logits);
        sampler.accept(token);
        out.tokens.push(token);
        if model.tokenizer.is_eog(token) && !params.ignore_eog {
            out.finish = FinishReason::Stop;
            break;
        }
        let piece = pieces.push(token);
        let step = stops.push(&piece);
        if !emit(&step.text, &mut out) {
            out.finish = FinishReason::Cancelled;
            return Ok(out);
        }
        if step.is_stopped() {
            out.finish = FinishReason::Stop;
            return Ok(out);
        }
        if out.tokens.len() == params.max_tokens {
            break;
        }
        if session.n_tokens() + 1 > session.n_ctx() {
            break; // context full: finish as "length"
        }
        logits = session.decode_tokens(model, &[token], Logits::Last)?;
    }
    let rest = stops.finish();
    emit(&rest, &mut out);
    Ok(out)
}
