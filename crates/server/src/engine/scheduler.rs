//! The scheduler: one thread that owns the queue and every slot, and runs the model in
//! steps (continuous batching). Each step evaluates, in one batch, the next token of every
//! generating slot plus pieces of newly arrived prompts under a token budget, so the weights
//! are read once for all of them and a long prompt or an image never freezes the other
//! streams. Media chunks are encoded on the encoder thread (`encoder.rs`) while the other
//! slots keep decoding.
//!
//! Requests start in arrival order; a starting request is rendered and tokenized here and
//! given to the idle slot whose KV cache shares the longest prefix with it, else to the
//! least recently used idle slot.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use llm::{Session, StepInput};
use mtmd::{CellKey, Chunk, Chunks, MediaChunk, chunk_keys};
use tokio::sync::mpsc::UnboundedSender;

use super::Shared;
use super::encoder::EncodeJob;
use super::media_cache::Embeddings;
use super::slot::{
    After, Failure, Outcome, Piece, Slot, classify_llm, classify_mtmd, media_key, no_encoder,
    panic_text,
};
use crate::backend::{EngineError, Event, FinishReason, Prompt, Request};

/// Prompt rows one step may take besides the generated tokens: small enough that the
/// streams of other slots keep flowing while a long prompt is evaluated, large enough that
/// prompt evaluation runs at GEMM speed.
pub const STEP_PROMPT_TOKENS: usize = 256;

/// A submitted request and where its events go.
pub struct Job {
    pub request: Request,
    pub tx: UnboundedSender<Event>,
    pub submitted: Instant,
}

/// What the scheduler hears.
pub enum Msg {
    Submit(Job),
    /// The encoder made (or failed to make) the embeddings of media `key` for request
    /// `serial` on slot `slot`.
    Encoded {
        slot: usize,
        serial: u64,
        key: String,
        result: Result<Embeddings, Failure>,
    },
    Shutdown,
}

/// A request whose prompt is tokenized, ready for a slot.
pub struct Prepared {
    pub request: Request,
    pub tx: UnboundedSender<Event>,
    pub submitted: Instant,
    pub chunks: Chunks,
    pub keys: Vec<CellKey>,
    pub n_prompt: usize,
}

/// Renders and tokenizes a request's prompt; refuses empty prompts and prompts that do not
/// fit a slot.
// The job comes back with the failure so its client can be told; this runs once per request.
#[allow(clippy::result_large_err)]
pub fn prepare(shared: &Shared, job: Job) -> Result<Prepared, (Job, Failure)> {
    let model = &shared.model;
    let chunks = match &job.request.prompt {
        Prompt::Chat { messages, media } => {
            let text = match model.apply_chat(messages, true) {
                Ok(t) => t,
                Err(e) => return Err((job, classify_llm(e))),
            };
            match (&shared.media, media.first()) {
                (Some(ctx), _) => {
                    let refs: Vec<mtmd::Media> = media.iter().map(|m| m.as_media()).collect();
                    match ctx.tokenize(&text, &refs) {
                        Ok(c) => c,
                        Err(e) => return Err((job, classify_mtmd(e))),
                    }
                }
                (None, Some(item)) => {
                    let f = Failure::Invalid(no_encoder(item.as_media().kind()));
                    return Err((job, f));
                }
                (None, None) => Chunks {
                    chunks: vec![Chunk::Text(model.tokenizer.tokenize(&text, true, true))],
                },
            }
        }
        Prompt::Text(text) => Chunks {
            chunks: vec![Chunk::Text(model.tokenizer.tokenize(text, true, true))],
        },
    };
    let n_prompt = chunks.n_tokens();
    if n_prompt == 0 {
        return Err((job, Failure::Invalid("the prompt is empty".into())));
    }
    if n_prompt >= shared.n_ctx {
        let f = Failure::Invalid(format!(
            "the prompt has {n_prompt} tokens (media included), the context holds {} per slot",
            shared.n_ctx
        ));
        return Err((job, f));
    }
    let pool = shared.kv_pool.capacity();
    if n_prompt >= pool {
        let f = Failure::Invalid(format!(
            "the prompt has {n_prompt} tokens (media included), the KV pool of all slots holds {pool} (--kv-pool)"
        ));
        return Err((job, f));
    }
    let keys = chunk_keys(&chunks);
    Ok(Prepared {
        request: job.request,
        tx: job.tx,
        submitted: job.submitted,
        chunks,
        keys,
        n_prompt,
    })
}

/// The idle slot to serve a prompt of `keys`: longest reusable prefix, then least recently
/// used.
pub fn pick_slot(slots: &[Slot<'_>], keys: &[CellKey]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.is_idle())
        .map(|(i, s)| (i, mtmd::reusable_prefix(&s.cached, keys), s.last_used))
        // Longest prefix wins; among equals the smallest last_used (the oldest) wins.
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(i, _, _)| i)
}

/// The scheduler's state: the queue, the slots and where encode work goes.
struct Scheduler<'m> {
    shared: &'m Shared,
    slots: Vec<Slot<'m>>,
    queue: VecDeque<Job>,
    /// Requests taken from the queue that wait for room in the KV pool (ahead of the queue).
    held: VecDeque<Prepared>,
    encoder: Option<Sender<Vec<EncodeJob>>>,
    back: Sender<Msg>,
    counter: u64,
}

pub fn run(
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    back: Sender<Msg>,
    sessions: Vec<Session>,
    encoder: Option<Sender<Vec<EncodeJob>>>,
) {
    let model = shared.model.clone();
    let slots = sessions.into_iter().map(|s| Slot::new(&model, s)).collect();
    let mut s = Scheduler {
        shared: &shared,
        slots,
        queue: VecDeque::new(),
        held: VecDeque::new(),
        encoder,
        back,
        counter: 0,
    };
    loop {
        // Block only when no slot can make progress; wake up now and then to notice
        // clients that left.
        let msg = if s.has_step() {
            rx.try_recv().ok()
        } else {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        };
        let mut shutdown = false;
        for m in msg
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match m {
                Msg::Submit(job) => s.queue.push_back(job),
                Msg::Encoded {
                    slot,
                    serial,
                    key,
                    result,
                } => s.encoded(slot, serial, &key, result),
                Msg::Shutdown => shutdown = true,
            }
        }
        if shutdown {
            break;
        }
        s.drop_departed();
        s.assign();
        s.request_media();
        s.step();
    }
    // Requests still queued are dropped, which their receivers see as a closed channel.
    for _ in 0..s.queue.len() {
        shared.metrics.dequeued();
    }
}

impl<'m> Scheduler<'m> {
    /// Whether some slot has a piece for the next step.
    fn has_step(&self) -> bool {
        self.slots.iter().any(Slot::ready)
            || (!self.queue.is_empty() && self.slots.iter().any(Slot::is_idle))
            || (!self.held.is_empty() && self.slots.iter().all(Slot::is_idle))
    }

    /// Forgets queued requests whose clients left, and stops running ones.
    fn drop_departed(&mut self) {
        let held = self.held.len();
        self.held.retain(|job| !job.tx.is_closed());
        for _ in self.held.len()..held {
            self.shared.metrics.finished_cancelled();
        }
        let before = self.queue.len();
        self.queue.retain(|job| !job.tx.is_closed());
        for _ in self.queue.len()..before {
            self.shared.metrics.dequeued();
        }
        for i in 0..self.slots.len() {
            let gone = self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.job.tx.is_closed());
            if gone {
                self.fail(i, Failure::Cancelled);
            }
        }
    }

    /// Starts queued requests on idle slots, in arrival order, each once the KV pool has
    /// room for its whole prompt and first token (leased up front, so a prompt never stalls
    /// half-way for want of cells).
    fn assign(&mut self) {
        while self.slots.iter().any(Slot::is_idle) {
            let metrics = &self.shared.metrics;
            let prepared = match self.held.pop_front() {
                Some(p) => p,
                None => {
                    let Some(job) = self.queue.pop_front() else {
                        break;
                    };
                    metrics.dequeued();
                    metrics.queue_wait(job.submitted.elapsed());
                    match prepare(self.shared, job) {
                        Ok(p) => p,
                        Err((job, f)) => {
                            metrics.failed();
                            let _ = job.tx.send(Event::Error(f.into()));
                            continue;
                        }
                    }
                }
            };
            let Some(i) = pick_slot(&self.slots, &prepared.keys) else {
                self.held.push_front(prepared); // cannot happen: an idle slot exists
                break;
            };
            self.counter += 1;
            let slot = &mut self.slots[i];
            slot.last_used = self.counter;
            metrics.slot_busy();
            if let Err((job, f)) = slot.start(prepared, self.counter) {
                metrics.slot_idle();
                metrics.failed();
                let _ = job.tx.send(Event::Error(f.into()));
                continue;
            }
            let need = slot
                .active
                .as_ref()
                .map_or(0, |a| a.job.n_prompt - a.keep + 1);
            if !self.make_room(i, need) {
                // Running requests hold the pool: wait until one ends.
                if let Some(job) = self.slots[i].abandon() {
                    self.shared.metrics.slot_idle();
                    self.held.push_front(job);
                }
                break;
            }
        }
    }

    /// Leases `extra` more cells to slot `i`'s cache, dropping idle slots' kept prefixes
    /// (least recently used first) while the pool is short. False when only running
    /// requests hold the rest.
    fn make_room(&mut self, i: usize, extra: usize) -> bool {
        loop {
            match self.slots[i].session.cache.reserve(extra) {
                Err(llm::LlmError::KvPoolFull { .. }) => {}
                // Context overflow is the decode's to report (with the request's numbers).
                _ => return true,
            }
            let victim = (0..self.slots.len())
                .filter(|&j| j != i && self.slots[j].is_idle())
                .filter(|&j| self.slots[j].session.cache.leased() > 0)
                .min_by_key(|&j| self.slots[j].last_used);
            let Some(j) = victim else {
                return false;
            };
            let sl = &mut self.slots[j];
            sl.truncate(0);
            sl.session.cache.release_unused();
            self.shared.metrics.kv_evicted();
        }
    }

    /// Gets the embeddings of every media chunk of newly started requests: from the media
    /// cache, else from the encoder. What this step asks for goes to the encoder thread as
    /// one message, so a request's chunks (and those of requests that started together)
    /// are encoded in one batched pass.
    fn request_media(&mut self) {
        let mut jobs: Vec<EncodeJob> = Vec::new();
        for i in 0..self.slots.len() {
            let wanted: Vec<MediaChunk> =
                self.slots[i].wanted_media().into_iter().cloned().collect();
            let Some(a) = self.slots[i].active.as_mut() else {
                continue;
            };
            a.requested = true;
            let serial = a.serial;
            let mut asked = std::collections::HashSet::new();
            for media in wanted {
                let key = media_key(&media);
                // The same picture twice in one conversation is encoded once.
                if !asked.insert(key.clone()) {
                    continue;
                }
                let hit = self
                    .shared
                    .media_cache
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key);
                if let Some(embd) = hit {
                    self.encoded(i, serial, &key, Ok(embd));
                    continue;
                }
                if self.encoder.is_none() {
                    self.fail(i, Failure::Invalid(no_encoder(media.kind)));
                    break;
                }
                jobs.push(EncodeJob {
                    slot: i,
                    serial,
                    key,
                    media,
                    back: self.back.clone(),
                });
            }
        }
        let (Some(encoder), false) = (&self.encoder, jobs.is_empty()) else {
            return;
        };
        if let Err(std::sync::mpsc::SendError(lost)) = encoder.send(jobs) {
            for job in lost {
                let stopped = Failure::Internal("the media encoder has stopped".into());
                self.fail(job.slot, stopped);
            }
        }
    }

    /// Embeddings for the media chunk `key` of slot `slot`'s request arrived.
    fn encoded(
        &mut self,
        slot: usize,
        serial: u64,
        key: &str,
        result: Result<Embeddings, Failure>,
    ) {
        let n_embd = self.shared.model.hparams().n_embd_inp();
        let Some(sl) = self.slots.get_mut(slot) else {
            return;
        };
        // A late answer for a request that is gone: the media cache has it already.
        if sl.active.as_ref().is_none_or(|a| a.serial != serial) {
            return;
        }
        let Some(media) = sl.media_chunk(key) else {
            return;
        };
        let n_tokens = media.n_tokens();
        let id = media.id.clone();
        match result {
            Ok(embd) if embd.len() == n_tokens * n_embd => {
                if let Some(a) = sl.active.as_mut() {
                    a.media.insert(key.to_string(), embd);
                }
            }
            Ok(embd) => {
                let f = Failure::Internal(format!(
                    "media {id}: the encoder gave {} values for {n_tokens} tokens of width {n_embd}",
                    embd.len()
                ));
                self.fail(slot, f);
            }
            Err(f) => self.fail(slot, f),
        }
    }

    /// Ends slot `i`'s request with `f` (nothing is sent for a cancelled one).
    fn fail(&mut self, i: usize, f: Failure) {
        let slot = &mut self.slots[i];
        let Some(job) = slot.abandon() else {
            return;
        };
        let metrics = &self.shared.metrics;
        metrics.slot_idle();
        match f {
            Failure::Cancelled => metrics.finished_cancelled(),
            f => {
                metrics.failed();
                let _ = job.tx.send(Event::Error(f.into()));
            }
        }
    }

    fn finished(&mut self, o: Outcome) {
        let metrics = &self.shared.metrics;
        metrics.slot_idle();
        metrics.finished(&o.usage, o.prompt_time, o.generation_time);
        if o.finish != FinishReason::Cancelled {
            let _ = o.tx.send(Event::Done {
                usage: o.usage,
                finish: o.finish,
                prompt_time: o.prompt_time,
                generation_time: o.generation_time,
            });
        }
    }

    /// One batched step over every slot that has a piece ready.
    fn step(&mut self) {
        // Generated tokens first (one row each), then prompt pieces in slot order of arrival.
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].active.is_some())
            .collect();
        order.sort_by_key(|&i| {
            let a = self.slots[i].active.as_ref().expect("active");
            (a.next_token.is_none(), a.serial)
        });
        let mut budget = STEP_PROMPT_TOKENS;
        let mut pieces: Vec<(usize, Piece)> = Vec::new();
        let mut any_prompt = false;
        // Slots whose next token has no cell in the KV pool (prompts are leased at start).
        let mut blocked: Vec<usize> = Vec::new();
        for i in order {
            let generating = self.slots[i]
                .active
                .as_ref()
                .is_some_and(|a| a.next_token.is_some());
            if generating && !self.make_room(i, 1) {
                blocked.push(i);
                continue;
            }
            if let Some(p) = self.slots[i].next_piece(budget, !any_prompt) {
                if !matches!(p, Piece::Token(_)) {
                    budget = budget.saturating_sub(p.n_rows());
                    any_prompt = true;
                }
                pieces.push((i, p));
            }
        }
        let running = self.slots.iter().filter(|s| !s.is_idle()).count();
        if pieces.is_empty() && !blocked.is_empty() && blocked.len() == running {
            // Every running request waits for a cell that only another could give back: the
            // newest ends as if its context were full, and its cells free the others.
            let newest = blocked
                .into_iter()
                .max_by_key(|&i| self.slots[i].active.as_ref().map_or(0, |a| a.serial));
            if let Some(i) = newest {
                let o = self.slots[i].stop_for_room();
                self.finished(o);
                self.slots[i].session.cache.release_unused();
            }
            return;
        }
        if pieces.is_empty() {
            return;
        }
        let started = Instant::now();
        let results = self.decode(&pieces);
        let rows: usize = pieces.iter().map(|(_, p)| p.n_rows()).sum();
        self.shared
            .metrics
            .step(pieces.len(), rows, started.elapsed());
        for ((i, piece), result) in pieces.into_iter().zip(results) {
            let after = match result {
                Ok(logits) => self.slots[i].absorb(piece, logits),
                Err(f) => After::Failed(f),
            };
            match after {
                After::Running => {
                    let a = self.slots[i].active.as_ref();
                    if let Some(a) = a
                        && a.next_token.is_some()
                        && a.generator.as_ref().is_some_and(|g| g.tokens().len() == 1)
                    {
                        self.shared.metrics.first_token(a.job.submitted.elapsed());
                    }
                }
                After::Finished(o) => {
                    if o.usage.completion_tokens <= 1 {
                        self.shared.metrics.first_token(o.prompt_time);
                    }
                    self.finished(o);
                }
                After::Failed(f) => {
                    self.fail(i, f);
                }
            }
        }
        // Finished requests keep their cells for prefix reuse but not the rest of a page.
        for slot in self.slots.iter_mut().filter(|s| s.is_idle()) {
            slot.session.cache.release_unused();
        }
    }

    /// Decodes every piece in one batch. When the batch fails, each piece is tried alone so
    /// that only the request at fault fails; a panic fails every request of the step and
    /// clears their caches (nothing in them can be trusted).
    fn decode(&mut self, pieces: &[(usize, Piece)]) -> Vec<Result<Vec<f32>, Failure>> {
        let all: Vec<usize> = (0..pieces.len()).collect();
        match self.run_batch(pieces, &all) {
            Ok(Ok(out)) => out.into_iter().map(Ok).collect(),
            Ok(Err(e)) if pieces.len() == 1 => vec![Err(classify_llm(e))],
            Ok(Err(_)) => {
                let mut results = Vec::with_capacity(pieces.len());
                for k in 0..pieces.len() {
                    results.push(match self.run_batch(pieces, &[k]) {
                        Ok(Ok(mut out)) => Ok(out.pop().unwrap_or_default()),
                        Ok(Err(e)) => Err(classify_llm(e)),
                        Err(panic) => Err(self.panicked(pieces[k].0, &panic_text(&*panic))),
                    });
                }
                results
            }
            Err(panic) => {
                let what = panic_text(&*panic);
                pieces
                    .iter()
                    .map(|(i, _)| Err(self.panicked(*i, &what)))
                    .collect()
            }
        }
    }

    /// Decodes pieces `which` together.
    fn run_batch(
        &mut self,
        pieces: &[(usize, Piece)],
        which: &[usize],
    ) -> std::thread::Result<llm::Result<Vec<Vec<f32>>>> {
        let model = self.shared.model.clone();
        let mut slots: Vec<Option<&mut Slot<'m>>> = self.slots.iter_mut().map(Some).collect();
        let mut steps: Vec<(&mut Session, StepInput)> = Vec::with_capacity(which.len());
        for &k in which {
            let (i, piece) = &pieces[k];
            let Some(slot) = slots[*i].take() else {
                continue;
            };
            steps.push((&mut slot.session, piece.input()));
        }
        std::panic::catch_unwind(AssertUnwindSafe(|| model.decode_many(&mut steps)))
    }

    /// Clears slot `slot`'s cache after a panic and names the failure.
    fn panicked(&mut self, slot: usize, what: &str) -> Failure {
        let sl = &mut self.slots[slot];
        sl.session.clear();
        sl.cached.clear();
        Failure::Internal(format!(
            "the engine failed while serving this request: {what}"
        ))
    }
}

/// Refuses requests when the engine stopped.
pub fn stopped() -> EngineError {
    EngineError::Internal("the engine has stopped".into())
}
