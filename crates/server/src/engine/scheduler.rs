//! The dispatcher: one thread that owns the queue. Requests start in arrival order; when one
//! starts, it is rendered and tokenized here (cheap next to decoding, and needed to compare
//! it with what each slot holds) and handed to the idle slot whose KV cache shares the
//! longest prefix with it, else to the least recently used idle slot.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use mtmd::{CellKey, Chunk, Chunks, chunk_keys};
use tokio::sync::mpsc::UnboundedSender;

use super::Shared;
use super::reuse::{CacheState, safe_prefix};
use super::slot::{Failure, classify_llm, classify_mtmd, no_encoder};
use crate::backend::{EngineError, Event, Prompt, Request};

/// A submitted request and where its events go.
pub struct Job {
    pub request: Request,
    pub tx: UnboundedSender<Event>,
}

/// What the dispatcher hears.
pub enum Msg {
    Submit(Job),
    /// Slot `i` finished its request and waits for the next.
    Idle(usize),
    Shutdown,
}

/// A request whose prompt is tokenized, ready for a slot.
pub struct Prepared {
    pub request: Request,
    pub tx: UnboundedSender<Event>,
    pub chunks: Chunks,
    pub keys: Vec<CellKey>,
    pub n_prompt: usize,
}

/// The dispatcher's view of one slot.
pub struct SlotHandle {
    pub tx: Sender<Prepared>,
    /// What the slot's KV cache holds; only read while the slot is idle.
    pub cached: Arc<Mutex<CacheState>>,
    pub idle: bool,
    /// Dispatch counter value when the slot last got a request (0: never).
    pub last_used: u64,
}

/// Renders and tokenizes a request's prompt; refuses empty prompts and prompts that do not
/// fit a slot.
pub fn prepare(
    shared: &Shared,
    request: Request,
    tx: UnboundedSender<Event>,
) -> Result<Prepared, Failure> {
    let model = &shared.model;
    let chunks = match &request.prompt {
        Prompt::Chat { messages, media } => {
            let text = model.apply_chat(messages, true).map_err(classify_llm)?;
            match (&shared.media, media.first()) {
                (Some(ctx), _) => {
                    let refs: Vec<mtmd::Media> = media.iter().map(|m| m.as_media()).collect();
                    ctx.tokenize(&text, &refs).map_err(classify_mtmd)?
                }
                (None, Some(item)) => {
                    return Err(Failure::Invalid(no_encoder(item.as_media().kind())));
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
        return Err(Failure::Invalid("the prompt is empty".into()));
    }
    if n_prompt >= shared.n_ctx {
        return Err(Failure::Invalid(format!(
            "the prompt has {n_prompt} tokens (media included), the context holds {} per slot",
            shared.n_ctx
        )));
    }
    let keys = chunk_keys(&chunks);
    Ok(Prepared {
        request,
        tx,
        chunks,
        keys,
        n_prompt,
    })
}

/// The idle slot to serve `chunks`: longest reusable prefix, then least recently used.
pub fn pick_slot(slots: &[SlotHandle], chunks: &Chunks, keys: &[CellKey]) -> Option<usize> {
    slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.idle)
        .map(|(i, s)| {
            let cached = s.cached.lock().unwrap_or_else(|p| p.into_inner());
            (i, safe_prefix(&cached, chunks, keys), s.last_used)
        })
        // Longest prefix wins; among equals the smallest last_used (the oldest) wins.
        .max_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)))
        .map(|(i, _, _)| i)
}

pub fn run(shared: Arc<Shared>, rx: Receiver<Msg>, mut slots: Vec<SlotHandle>) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut counter = 0u64;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Submit(job) => queue.push_back(job),
            Msg::Idle(i) => {
                if let Some(s) = slots.get_mut(i) {
                    s.idle = true;
                }
            }
            Msg::Shutdown => break,
        }
        // Clients that left while waiting: forget them now so the queue gauge is true.
        let before = queue.len();
        queue.retain(|job| !job.tx.is_closed());
        for _ in queue.len()..before {
            shared.metrics.dequeued();
        }
        while slots.iter().any(|s| s.idle) {
            let Some(job) = queue.pop_front() else { break };
            shared.metrics.dequeued();
            // The client left while the request waited: nothing to do.
            if job.tx.is_closed() {
                continue;
            }
            let prepared = match prepare(&shared, job.request, job.tx.clone()) {
                Ok(p) => p,
                Err(f) => {
                    shared.metrics.failed();
                    let _ = job.tx.send(Event::Error(f.into()));
                    continue;
                }
            };
            let Some(i) = pick_slot(&slots, &prepared.chunks, &prepared.keys) else {
                break; // cannot happen: an idle slot exists
            };
            counter += 1;
            let slot = &mut slots[i];
            slot.idle = false;
            slot.last_used = counter;
            shared.metrics.slot_busy();
            if let Err(std::sync::mpsc::SendError(p)) = slot.tx.send(prepared) {
                // The slot thread is gone (it cannot be, short of an abort): never use it again.
                shared.metrics.slot_idle();
                let _ = p.tx.send(Event::Error(EngineError::Internal(format!(
                    "slot {i} stopped"
                ))));
            }
        }
    }
    // Dropping `slots` closes every slot's channel: each ends after its current request.
    // Requests still queued are dropped, which their receivers see as a closed channel.
    for _ in 0..queue.len() {
        shared.metrics.dequeued();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(cached: &[u32], idle: bool, last_used: u64) -> SlotHandle {
        let chunks = text(cached);
        SlotHandle {
            tx: std::sync::mpsc::channel().0,
            cached: Arc::new(Mutex::new(CacheState {
                keys: chunk_keys(&chunks),
                big: super::super::reuse::batch_classes(&chunks, 0),
            })),
            idle,
            last_used,
        }
    }

    fn text(ids: &[u32]) -> Chunks {
        Chunks {
            chunks: vec![Chunk::Text(ids.to_vec())],
        }
    }

    fn pick(slots: &[SlotHandle], ids: &[u32]) -> Option<usize> {
        let chunks = text(ids);
        pick_slot(slots, &chunks, &chunk_keys(&chunks))
    }

    #[test]
    fn picks_longest_prefix_then_least_recently_used() {
        // Prompts of 20+ tokens so that every batch takes the same kernel path.
        let base: Vec<u32> = (100..140).collect();
        let with = |tail: &[u32]| [&base[..], tail].concat();
        let slots = vec![
            handle(&base[..20], true, 5),
            handle(&base[..30], true, 9),
            handle(&base, false, 1), // busy: never picked
            handle(&[], true, 2),
        ];
        let prompt = with(&(0..20).collect::<Vec<u32>>());
        assert_eq!(pick(&slots, &prompt[..]), Some(1));
        // Nothing shared: the least recently used idle slot.
        assert_eq!(pick(&slots, &(0..30).collect::<Vec<u32>>()), Some(3));
        let none_idle = vec![handle(&[], false, 0)];
        assert_eq!(pick(&none_idle, &[1]), None);
    }
}
