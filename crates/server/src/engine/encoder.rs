//! The media encoder thread: runs images and audio windows through the mmproj beside the
//! scheduler, so an upload never stalls the other requests' streams. The chunks waiting
//! when it looks (an image's tiles, the images of one request or of requests that arrived
//! together) go through the encoder in one batched pass. Results go into the media cache
//! and back to the scheduler.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Instant;

use mtmd::MediaChunk;

use super::Shared;
use super::scheduler::Msg;
use super::slot::{Failure, classify_mtmd, no_encoder, panic_text};

/// One media chunk to encode for request `serial` on slot `slot`.
pub struct EncodeJob {
    pub slot: usize,
    pub serial: u64,
    /// Media cache key: the item's content hash and the piece.
    pub key: String,
    pub media: MediaChunk,
    pub back: Sender<Msg>,
}

/// Chunks taken into one batched encode at most (the encoder bounds its passes by tokens).
const MAX_BATCH: usize = 32;

/// Serves `rx`: each message holds what one scheduler step asked for; messages waiting
/// together are joined, up to [`MAX_BATCH`] chunks per pass (a larger message goes whole).
pub fn run(shared: Arc<Shared>, rx: Receiver<Vec<EncodeJob>>) {
    while let Ok(mut jobs) = rx.recv() {
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => jobs.extend(more),
                Err(_) => break,
            }
        }
        // Someone else may have encoded the same pieces meanwhile; and requests arriving
        // together may ask for the same piece: it is encoded once for all of them.
        let mut todo: Vec<EncodeJob> = Vec::with_capacity(jobs.len());
        let mut same: Vec<(EncodeJob, usize)> = Vec::new();
        for job in jobs {
            if let Some(first) = todo.iter().position(|t| t.key == job.key) {
                same.push((job, first));
                continue;
            }
            let hit = shared
                .media_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&job.key);
            match hit {
                Some(e) => {
                    if !answer(&job, Ok(e)) {
                        return;
                    }
                }
                None => todo.push(job),
            }
        }
        let results = encode_jobs(&shared, &todo);
        for (job, first) in &same {
            if !answer(job, results[*first].1.clone()) {
                return;
            }
        }
        for (job, result) in results {
            if !answer(job, result) {
                return;
            }
        }
    }
}

/// Sends `job`'s result to the scheduler; false once the scheduler is gone.
fn answer(job: &EncodeJob, result: Result<Arc<Vec<f32>>, Failure>) -> bool {
    let msg = Msg::Encoded {
        slot: job.slot,
        serial: job.serial,
        key: job.key.clone(),
        result,
    };
    job.back.send(msg).is_ok()
}

type Answer<'a> = (&'a EncodeJob, Result<Arc<Vec<f32>>, Failure>);

/// Encodes `jobs` in one batch; when the batch fails, each alone, so that only the media at
/// fault fails.
fn encode_jobs<'a>(shared: &Shared, jobs: &'a [EncodeJob]) -> Vec<Answer<'a>> {
    let Some(ctx) = shared.media.as_ref() else {
        return jobs
            .iter()
            .map(|j| (j, Err(Failure::Invalid(no_encoder(j.media.kind)))))
            .collect();
    };
    if jobs.len() > 1 {
        let chunks: Vec<&MediaChunk> = jobs.iter().map(|j| &j.media).collect();
        let start = Instant::now();
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| ctx.encode_batch(&chunks)));
        if let Ok(Ok(embds)) = out {
            shared.metrics.encode_batch(jobs.len());
            let each = start.elapsed() / jobs.len() as u32;
            return jobs
                .iter()
                .zip(embds)
                .map(|(job, e)| (job, Ok(finish(shared, job, e, each))))
                .collect();
        }
    }
    jobs.iter()
        .map(|job| (job, encode_one(shared, ctx, job)))
        .collect()
}

fn encode_one(
    shared: &Shared,
    ctx: &mtmd::Context,
    job: &EncodeJob,
) -> Result<Arc<Vec<f32>>, Failure> {
    let start = Instant::now();
    shared.metrics.encode_batch(1);
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| ctx.encode(&job.media)));
    match out {
        Ok(Ok(e)) => Ok(finish(shared, job, e, start.elapsed())),
        Ok(Err(e)) => Err(classify_mtmd(e)),
        Err(panic) => Err(Failure::Internal(format!(
            "the engine failed while serving this request: {}",
            panic_text(&*panic)
        ))),
    }
}

/// Counts an encoded chunk and caches its embeddings.
fn finish(
    shared: &Shared,
    job: &EncodeJob,
    embd: Vec<f32>,
    time: std::time::Duration,
) -> Arc<Vec<f32>> {
    let embd = Arc::new(embd);
    shared.metrics.media_encoded(job.media.kind, time);
    shared
        .media_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(&job.key, embd.clone());
    embd
}
