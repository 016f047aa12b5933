//! One slot: a KV cache (an `llm::Session`), what each of its cells holds, and the request
//! it serves. Slots have no thread of their own: the scheduler (`scheduler.rs`) asks each
//! busy slot for its part of the next step, decodes every part in one batch and hands each
//! slot its logits back.
//!
//! A request moves through: prompt pieces (text cut to the step's token budget, media
//! chunks whole, each waiting for its embeddings when the encoder has not made them yet),
//! then one generated token per step until the generator stops.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use llm::{GenerateParams, Generator, LlmError, Logits, Model, Session};
use mtmd::{CellKey, Chunk, MediaChunk, MtmdError, chunks_after};

use super::media_cache::Embeddings;
use super::scheduler::Prepared;
use crate::backend::{EngineError, Event, FinishReason, Usage};

/// Why a request failed, before it becomes an [`EngineError`].
#[derive(Debug, Clone)]
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

/// The media cache's key of a chunk: its item's content hash and the piece.
pub fn media_key(m: &MediaChunk) -> String {
    format!("{}/{}", m.id, m.piece)
}

/// The refusal of media of `kind` by a model loaded without an mmproj.
pub fn no_encoder(kind: mtmd::MediaKind) -> String {
    format!(
        "this model takes no {} input: start the server with --mmproj",
        kind.name()
    )
}

/// A panic payload as text.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into())
}

/// What is left of a prompt.
pub enum Work {
    /// Text tokens; `last` when this is the prompt's final chunk.
    Text { tokens: Vec<u32>, last: bool },
    /// A media chunk, evaluated whole once its embeddings are there.
    Media(MediaChunk),
}

/// A slot's request in progress.
pub struct Active<'m> {
    pub job: Prepared,
    /// Serial number of the request (to recognise late encoder results).
    pub serial: u64,
    /// Prompt cells reused from the cache.
    pub keep: usize,
    /// Prompt cells in the cache so far (reused or evaluated).
    pub done_cells: usize,
    pub work: VecDeque<Work>,
    /// Embeddings of the request's media chunks as they arrive, by [`media_key`].
    pub media: HashMap<String, Embeddings>,
    /// Every media chunk of the request was asked for (at once, so the encoder can batch
    /// an image's tiles and the images of a prompt).
    pub requested: bool,
    pub assigned: Instant,
    pub prompt_time: Duration,
    /// Set when the prompt is evaluated: samples the answer.
    pub generator: Option<Generator<'m>>,
    pub gen_start: Option<Instant>,
    /// The token the next step decodes.
    pub next_token: Option<u32>,
}

pub struct Slot<'m> {
    pub model: &'m Model,
    pub session: Session,
    /// What each cell of `session` holds.
    pub cached: Vec<CellKey>,
    /// Dispatch counter value when the slot last got a request (0: never).
    pub last_used: u64,
    pub active: Option<Active<'m>>,
}

/// What a slot puts into one step.
pub enum Piece {
    /// One generated token.
    Token(u32),
    /// The next `tokens` of the prompt; logits when it ends the prompt.
    Prompt { tokens: Vec<u32>, last: bool },
    /// The front media chunk.
    Media {
        embd: Embeddings,
        rel_pos: Vec<i32>,
        n_pos: usize,
        non_causal: bool,
        n_tokens: usize,
    },
}

impl Piece {
    pub fn n_rows(&self) -> usize {
        match self {
            Piece::Token(_) => 1,
            Piece::Prompt { tokens, .. } => tokens.len(),
            Piece::Media { n_tokens, .. } => *n_tokens,
        }
    }

    pub fn input(&self) -> llm::StepInput<'_> {
        match self {
            Piece::Token(t) => llm::StepInput::Tokens {
                tokens: std::slice::from_ref(t),
                logits: Logits::Last,
            },
            Piece::Prompt { tokens, last } => llm::StepInput::Tokens {
                tokens,
                logits: if *last { Logits::Last } else { Logits::None },
            },
            Piece::Media {
                embd,
                rel_pos,
                n_pos,
                non_causal,
                ..
            } => llm::StepInput::Embeddings {
                embd,
                rel_pos,
                n_pos: *n_pos,
                non_causal: *non_causal,
                logits: Logits::None,
            },
        }
    }
}

/// How a request ended, for its final event and the metrics.
pub struct Outcome {
    pub usage: Usage,
    pub finish: FinishReason,
    pub prompt_time: Duration,
    pub generation_time: Duration,
    pub tx: tokio::sync::mpsc::UnboundedSender<Event>,
}

impl<'m> Slot<'m> {
    pub fn new(model: &'m Model, session: Session) -> Self {
        Self {
            model,
            session,
            cached: Vec::new(),
            last_used: 0,
            active: None,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.active.is_none()
    }

    /// Forgets every cell from `n` on.
    pub fn truncate(&mut self, n: usize) {
        self.session.truncate(n);
        self.cached.truncate(n.min(self.session.n_tokens()));
    }

    /// Takes `job`: keeps the cached prefix it shares and queues the rest of its prompt.
    // The job comes back with the failure so its client can be told; once per request.
    #[allow(clippy::result_large_err)]
    pub fn start(&mut self, job: Prepared, serial: u64) -> Result<(), (Prepared, Failure)> {
        let keep = mtmd::reusable_prefix(&self.cached, &job.keys);
        self.truncate(keep);
        let rest = chunks_after(&job.chunks, keep);
        if !matches!(rest.chunks.last(), Some(Chunk::Text(t)) if !t.is_empty()) {
            let f = Failure::Invalid("the prompt must end with text".into());
            return Err((job, f));
        }
        let n = rest.chunks.len();
        let mut work = VecDeque::with_capacity(n);
        for (i, chunk) in rest.chunks.into_iter().enumerate() {
            match chunk {
                Chunk::Text(tokens) if tokens.is_empty() => {}
                Chunk::Text(tokens) => work.push_back(Work::Text {
                    tokens,
                    last: i + 1 == n,
                }),
                Chunk::Image(m) | Chunk::Audio(m) => work.push_back(Work::Media(m)),
                _ => {
                    let f = Failure::Invalid("this kind of media is not supported".into());
                    return Err((job, f));
                }
            }
        }
        self.active = Some(Active {
            job,
            serial,
            keep,
            done_cells: keep,
            work,
            media: HashMap::new(),
            requested: false,
            assigned: Instant::now(),
            prompt_time: Duration::ZERO,
            generator: None,
            gen_start: None,
            next_token: None,
        });
        Ok(())
    }

    /// Whether [`Slot::next_piece`] has something for the next step (budget permitting): a
    /// generated token, prompt text, or a media chunk whose embeddings are there.
    pub fn ready(&self) -> bool {
        self.active.as_ref().is_some_and(|a| {
            a.next_token.is_some()
                || matches!(a.work.front(), Some(Work::Text { .. }))
                || matches!(a.work.front(), Some(Work::Media(m)) if a.media.contains_key(&media_key(m)))
        })
    }

    /// The media chunks of this slot's request still to be asked for: all of them at first,
    /// then none.
    pub fn wanted_media(&self) -> Vec<&MediaChunk> {
        let Some(a) = self.active.as_ref().filter(|a| !a.requested) else {
            return Vec::new();
        };
        a.work
            .iter()
            .filter_map(|w| match w {
                Work::Media(m) if !a.media.contains_key(&media_key(m)) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The request's media chunk of cache key `key`, if it has one left to evaluate.
    pub fn media_chunk(&self, key: &str) -> Option<&MediaChunk> {
        self.active.as_ref()?.work.iter().find_map(|w| match w {
            Work::Media(m) if media_key(m) == key => Some(m),
            _ => None,
        })
    }

    /// This slot's part of the next step, taking at most `budget` prompt rows (a media
    /// chunk goes whole, over budget only when `may_exceed`). `None`: nothing to do now.
    pub fn next_piece(&mut self, budget: usize, may_exceed: bool) -> Option<Piece> {
        let a = self.active.as_mut()?;
        if let Some(t) = a.next_token {
            return Some(Piece::Token(t));
        }
        match a.work.front_mut()? {
            Work::Text { tokens, last } => {
                if budget == 0 {
                    return None;
                }
                let take = budget.min(tokens.len());
                let piece: Vec<u32> = tokens.drain(..take).collect();
                let last = *last && tokens.is_empty();
                if tokens.is_empty() {
                    a.work.pop_front();
                }
                Some(Piece::Prompt {
                    tokens: piece,
                    last,
                })
            }
            Work::Media(m) => {
                let embd = a.media.get(&media_key(m))?.clone();
                if m.n_tokens() > budget && !may_exceed {
                    return None;
                }
                let piece = Piece::Media {
                    embd,
                    rel_pos: m.decoder_positions(self.model.decoder.n_pos_comp()),
                    n_pos: m.n_pos(),
                    non_causal: m.non_causal,
                    n_tokens: m.n_tokens(),
                };
                a.work.pop_front();
                Some(piece)
            }
        }
    }

    /// Takes the output of this slot's piece of a step: records what its cells hold, and
    /// samples the next token once the prompt is in.
    pub fn absorb(&mut self, piece: Piece, logits: Vec<f32>) -> After {
        let Some(a) = self.active.as_mut() else {
            return After::Running;
        };
        match piece {
            Piece::Token(t) => {
                self.cached.push(CellKey::Token(t));
                a.next_token = None;
                self.sample(&logits)
            }
            Piece::Prompt { tokens, last } => {
                let from = a.done_cells;
                a.done_cells += tokens.len();
                self.cached
                    .extend_from_slice(&a.job.keys[from..a.done_cells]);
                if last {
                    self.begin_generation(&logits)
                } else {
                    After::Running
                }
            }
            Piece::Media { n_tokens, .. } => {
                let from = a.done_cells;
                a.done_cells += n_tokens;
                self.cached
                    .extend_from_slice(&a.job.keys[from..a.done_cells]);
                After::Running
            }
        }
    }

    fn begin_generation(&mut self, logits: &[f32]) -> After {
        let model = self.model;
        let room = self.session.n_ctx().saturating_sub(self.session.n_tokens());
        let Some(a) = self.active.as_mut() else {
            return After::Running;
        };
        a.prompt_time = a.assigned.elapsed();
        let started = Event::Started {
            prompt_tokens: a.job.n_prompt,
        };
        if a.job.tx.send(started).is_err() {
            return After::Failed(Failure::Cancelled);
        }
        let request = &a.job.request;
        let params = GenerateParams {
            // A larger max_tokens is clamped to the room (the HTTP layer reports it).
            max_tokens: request.max_tokens.map_or(room, |m| m.min(room)),
            sampling: request.sampling.clone(),
            stop: request.stop.clone(),
            ignore_eog: false,
        };
        a.generator = Some(Generator::new(model, &params, a.job.n_prompt - a.keep));
        a.gen_start = Some(Instant::now());
        self.sample(logits)
    }

    fn sample(&mut self, logits: &[f32]) -> After {
        let room = self.session.n_tokens() < self.session.n_ctx();
        let Some(a) = self.active.as_mut() else {
            return After::Running;
        };
        let Some(generator) = a.generator.as_mut() else {
            return After::Failed(Failure::Internal("sampling before the prompt".into()));
        };
        let tx = &a.job.tx;
        let next = generator.step(logits, room, &mut |piece| {
            tx.send(Event::Text(piece.to_string())).is_ok()
        });
        match next {
            Some(t) => {
                a.next_token = Some(t);
                After::Running
            }
            None => After::Finished(self.finish()),
        }
    }

    /// Ends the running request as if its context were full ("length"): the shared KV pool
    /// has no cell for its next token and nothing else can give one back.
    pub fn stop_for_room(&mut self) -> Outcome {
        if let Some(a) = self.active.as_mut() {
            a.next_token = None;
            let tx = &a.job.tx;
            if let Some(g) = a.generator.as_mut() {
                g.stop(FinishReason::Length, &mut |piece| {
                    tx.send(Event::Text(piece.to_string())).is_ok()
                });
            }
        }
        self.finish()
    }

    /// Ends the slot's request after its generator stopped.
    fn finish(&mut self) -> Outcome {
        let a = self.active.take().expect("an active request");
        let generation_time = a.gen_start.map(|t| t.elapsed()).unwrap_or_default();
        let generation = a.generator.map(|g| g.finish());
        let (completion_tokens, finish) = generation
            .map(|g| (g.tokens.len(), g.finish))
            .unwrap_or((0, FinishReason::Cancelled));
        Outcome {
            usage: Usage {
                prompt_tokens: a.job.n_prompt,
                cached_tokens: a.keep,
                completion_tokens,
            },
            finish,
            prompt_time: a.prompt_time,
            generation_time,
            tx: a.job.tx,
        }
    }

    /// Drops the slot's request (failed or cancelled), keeping the cells that are sound:
    /// after a failed step those of the step are gone already.
    pub fn abandon(&mut self) -> Option<Prepared> {
        self.active.take().map(|a| a.job)
    }
}

/// What a slot's request did with its share of a step.
pub enum After {
    Running,
    Finished(Outcome),
    Failed(Failure),
}
