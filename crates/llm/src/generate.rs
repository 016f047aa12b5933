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
    logits: Vec<f32>,
    prompt_evaluated: usize,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut generator = Generator::new(model, params, prompt_evaluated);
    let mut logits = logits;
    while let Some(token) = generator.step(&logits, session.n_tokens() < session.n_ctx(), on_text) {
        logits = session.decode_tokens(model, &[token], Logits::Last)?;
    }
    Ok(generator.finish())
}

/// The sampling side of generation, one token at a time, so that a scheduler can decode
/// many sequences' next tokens in one step: feed it each step's logits, decode the token it
/// returns, repeat until it returns `None`.
pub struct Generator<'m> {
    model: &'m Model,
    sampler: Sampler,
    stops: StopMatcher,
    pieces: StreamDecoder<'m>,
    max_tokens: usize,
    ignore_eog: bool,
    out: Generation,
    done: bool,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m Model, params: &GenerateParams, prompt_evaluated: usize) -> Self {
        Self {
            model,
            sampler: Sampler::new(params.sampling.clone()),
            stops: StopMatcher::new(params.stop.iter().cloned()),
            pieces: StreamDecoder::new(&model.tokenizer, false),
            max_tokens: params.max_tokens,
            ignore_eog: params.ignore_eog,
            out: Generation {
                prompt_evaluated,
                tokens: Vec::new(),
                text: String::new(),
                finish: FinishReason::Length,
            },
            done: false,
        }
    }

    /// Tokens sampled so far.
    pub fn tokens(&self) -> &[u32] {
        &self.out.tokens
    }

    /// Samples the next token from `logits` and streams its text to `on_text` (false:
    /// cancel). Returns the token to decode for the next step, or `None` when generation is
    /// over (`room`: the session has a free cell for it).
    pub fn step(
        &mut self,
        logits: &[f32],
        room: bool,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Option<u32> {
        if self.done {
            return None;
        }
        if self.out.tokens.len() >= self.max_tokens {
            return self.end(FinishReason::Length, on_text);
        }
        let token = self.sampler.sample(logits);
        self.sampler.accept(token);
        self.out.tokens.push(token);
        if self.model.tokenizer.is_eog(token) && !self.ignore_eog {
            return self.end(FinishReason::Stop, on_text);
        }
        let piece = self.pieces.push(token);
        let step = self.stops.push(&piece);
        if !self.emit(&step.text, on_text) {
            self.out.finish = FinishReason::Cancelled;
            self.done = true;
            return None;
        }
        if step.is_stopped() {
            self.out.finish = FinishReason::Stop;
            self.done = true;
            return None;
        }
        if self.out.tokens.len() == self.max_tokens || !room {
            // The token limit, or the context is full: finish as "length".
            return self.end(FinishReason::Length, on_text);
        }
        Some(token)
    }

    /// Ends generation early with `finish` (e.g. `Length` when the KV cache has no room for
    /// the next token), flushing held-back text to `on_text`.
    pub fn stop(&mut self, finish: FinishReason, on_text: &mut dyn FnMut(&str) -> bool) {
        if !self.done {
            self.end(finish, on_text);
        }
    }

    /// Ends with `finish`, flushing text held back for a possible stop string.
    fn end(&mut self, finish: FinishReason, on_text: &mut dyn FnMut(&str) -> bool) -> Option<u32> {
        self.out.finish = finish;
        self.done = true;
        let rest = self.stops.finish();
        self.emit(&rest, on_text);
        None
    }

    fn emit(&mut self, text: &str, on_text: &mut dyn FnMut(&str) -> bool) -> bool {
        if text.is_empty() {
            return true;
        }
        self.out.text.push_str(text);
        on_text(text)
    }

    /// What was generated and why it ended.
    pub fn finish(self) -> Generation {
        self.out
    }
}
