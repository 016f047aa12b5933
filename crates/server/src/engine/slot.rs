//! One slot: a worker thread with its own KV cache (an `llm::Session`) and the list of what
//! each cell holds. It serves one request at a time: keeps the cached prefix the new prompt
//! shares, evaluates the rest (media embeddings from the media cache when it has them),
//! streams the answer and remembers what is now in the cache for the next request.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm::{GenerateParams, LlmError, Logits, Session};
use mtmd::{CellKey, Chunk, MediaChunk, MtmdError, chunks_after};

use super::Shared;
use super::media_cache::Embeddings;
use super::reuse::{CacheState, batch_classes, safe_prefix};
use super::scheduler::{Msg, Prepared};
use crate::backend::{EngineError, Event, FinishReason, Usage};

/// Why a request failed, before it becomes an [`EngineError`].
#[derive(Debug)]
pub enum Failure {
    /// The client's fault (HTTP 400).
    Invalid(String),
    /// Ours (HTTP 500).
    Internal(String),
    /// The client left; nobody to tell.
    Cancelled,
}

impl From<Failure> for EngineError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Invalid(m) => EngineError::InvalidRequest(m),
            Failure::Internal(m) => EngineError::Internal(m),
            Failure::Cancelled => EngineError::Internal("the request was cancelled".into()),
        }
    }
}

/// Errors a request's content can cause are the client's; the rest are ours.
pub fn classify_llm(e: LlmError) -> Failure {
    match e {
        LlmError::ContextFull { .. }
        | LlmError::BadToken { .. }
        | LlmError::BadBatch(_)
        | LlmError::ChatTemplate(_)
        | LlmError::NoChatTemplate(_) => Failure::Invalid(e.to_string()),
        e => Failure::Internal(e.to_string()),
    }
}

pub fn classify_mtmd(e: MtmdError) -> Failure {
    match e {
        MtmdError::Llm(e) => classify_llm(e),
        MtmdError::MarkerCount { .. }
        | MtmdError::UnsupportedMedia { .. }
        | MtmdError::Encoder { .. } => Failure::Invalid(e.to_string()),
        e => Failure::Internal(e.to_string()),
    }
}

/// The refusal of media of `kind` by a model loaded without an mmproj.
pub fn no_encoder(kind: mtmd::MediaKind) -> String {
    format!(
        "this model takes no {} input: start the server with --mmproj",
        kind.name()
    )
}

pub struct Slot {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub session: Session,
    /// What each cell of `session` holds; the dispatcher reads it while the slot is idle.
    pub cached: Arc<Mutex<CacheState>>,
}

/// The outcome of one request, for its final event and the metrics.
struct Outcome {
    usage: Usage,
    finish: FinishReason,
    prompt_time: Duration,
    generation_time: Duration,
}

impl Slot {
    /// Serves requests until the dispatcher closes the channel or goes away.
    pub fn run(mut self, rx: Receiver<Prepared>, dispatcher: Sender<Msg>) {
        while let Ok(job) = rx.recv() {
            let tx = job.tx.clone();
            let last = self.serve_guarded(job);
            // Idle before the last event goes out, so a client that reads the gauges right
            // after its answer sees this slot free.
            self.shared.metrics.slot_idle();
            if let Some(event) = last {
                let _ = tx.send(event);
            }
            if dispatcher.send(Msg::Idle(self.index)).is_err() {
                break;
            }
        }
    }

    fn set_cached(&self, state: CacheState) {
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = state;
    }

    fn truncate(&mut self, n: usize) {
        self.session.truncate(n);
        self.cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .truncate(n);
    }

    /// Serves one request, turning a panic into an internal error (the slot forgets its
    /// cache: nothing in it can be trusted). Returns the last event to send, if any.
    fn serve_guarded(&mut self, job: Prepared) -> Option<Event> {
        if job.tx.is_closed() {
            return None;
        }
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.serve(&job)));
        let metrics = &self.shared.metrics;
        match result {
            Ok(Ok(o)) => {
                metrics.finished(&o.usage, o.prompt_time, o.generation_time);
                (o.finish != FinishReason::Cancelled).then_some(Event::Done {
                    usage: o.usage,
                    finish: o.finish,
                    prompt_time: o.prompt_time,
                    generation_time: o.generation_time,
                })
            }
            Ok(Err(Failure::Cancelled)) => None,
            Ok(Err(f)) => {
                metrics.failed();
                Some(Event::Error(f.into()))
            }
            Err(panic) => {
                self.session.clear();
                self.set_cached(CacheState::default());
                metrics.failed();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown cause".into());
                Some(Event::Error(EngineError::Internal(format!(
                    "the engine failed while serving this request: {what}"
                ))))
            }
        }
    }

    fn serve(&mut self, job: &Prepared) -> Result<Outcome, Failure> {
        let start = Instant::now();
        let keep = {
            let cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            safe_prefix(&cached, &job.chunks, &job.keys)
        };
        self.truncate(keep);
        let logits = match self.evaluate(job, keep) {
            Ok(l) => l,
            Err(f) => {
                // Part of the suffix may be in the cache: forget it rather than trust it.
                self.truncate(keep);
                return Err(f);
            }
        };
        self.set_cached(CacheState {
            keys: job.keys.clone(),
            big: batch_classes(&job.chunks, 0),
        });
        let prompt_time = start.elapsed();
        if job
            .tx
            .send(Event::Started {
                prompt_tokens: job.n_prompt,
            })
            .is_err()
        {
            return Err(Failure::Cancelled);
        }

        let model = &self.shared.model;
        let room = self.session.n_ctx().saturating_sub(self.session.n_tokens());
        let params = GenerateParams {
            // A larger max_tokens is clamped to the room (the HTTP layer reports it).
            max_tokens: job.request.max_tokens.map_or(room, |m| m.min(room)),
            sampling: job.request.sampling.clone(),
            stop: job.request.stop.clone(),
            ignore_eog: false,
        };
        let gen_start = Instant::now();
        let tx = &job.tx;
        let generation = llm::generate::continue_generation(
            model,
            &mut self.session,
            logits,
            job.n_prompt - keep,
            &params,
            &mut |piece| tx.send(Event::Text(piece.to_string())).is_ok(),
        );
        let generation = match generation {
            Ok(g) => g,
            Err(e) => {
                self.truncate(keep);
                return Err(classify_llm(e));
            }
        };
        let generation_time = gen_start.elapsed();
        // Every generated token but the last went through the decoder (as in `mtmd chat`).
        {
            let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
            let decoded = self.session.n_tokens().saturating_sub(cached.keys.len());
            cached.keys.extend(
                generation
                    .tokens
                    .iter()
                    .take(decoded)
                    .map(|&t| CellKey::Token(t)),
            );
            // Decoded one at a time: the few-rows kernel path.
            cached.big.extend(std::iter::repeat_n(false, decoded));
        }
        Ok(Outcome {
            usage: Usage {
                prompt_tokens: job.n_prompt,
                cached_tokens: keep,
                completion_tokens: generation.tokens.len(),
            },
            finish: generation.finish,
            prompt_time,
            generation_time,
        })
    }

    /// Evaluates the prompt after its first `keep` cells, one chunk at a time so a client
    /// that left is noticed between chunks. Returns the last token's logits.
    fn evaluate(&mut self, job: &Prepared, keep: usize) -> Result<Vec<f32>, Failure> {
        let model = self.shared.model.clone();
        let suffix = chunks_after(&job.chunks, keep);
        let mut logits = None;
        let n = suffix.len();
        for (i, chunk) in suffix.iter().enumerate() {
            if job.tx.is_closed() {
                return Err(Failure::Cancelled);
            }
            let want = if i + 1 == n {
                Logits::Last
            } else {
                Logits::None
            };
            match chunk {
                Chunk::Text(tokens) if tokens.is_empty() => {}
                Chunk::Text(tokens) => {
                    let out = self
                        .session
                        .decode_tokens(&model, tokens, want)
                        .map_err(classify_llm)?;
                    logits = (want == Logits::Last).then_some(out);
                }
                Chunk::Image(media) | Chunk::Audio(media) => {
                    let embd = self.embeddings_for(media)?;
                    mtmd::eval_media(&model, &mut self.session, media, &embd)
                        .map_err(classify_mtmd)?;
                    logits = None;
                }
                _ => {
                    return Err(Failure::Invalid(
                        "this kind of media is not supported".into(),
                    ));
                }
            }
        }
        logits.ok_or_else(|| Failure::Invalid("the prompt must end with text".into()))
    }

    /// A media chunk's embeddings: from the media cache, else from the encoder (then cached).
    /// The key is the item's id (its content hash) and the piece (tile, audio window).
    fn embeddings_for(&self, media: &MediaChunk) -> Result<Embeddings, Failure> {
        let shared = &self.shared;
        let key = format!("{}/{}", media.id, media.piece);
        let cached = shared
            .media_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key);
        if let Some(e) = cached {
            return Ok(e);
        }
        let ctx = shared
            .media
            .as_ref()
            .ok_or_else(|| Failure::Invalid(no_encoder(media.kind)))?;
        let start = Instant::now();
        let embd = Arc::new(ctx.encode(media).map_err(classify_mtmd)?);
        shared.metrics.media_encoded(media.kind, start.elapsed());
        shared
            .media_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(&key, embd.clone());
        Ok(embd)
    }
}
