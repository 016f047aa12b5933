//! The media encoder thread: runs images and audio windows through the mmproj beside the
//! scheduler, so an upload never stalls the other requests' streams. Results go into the
//! media cache and back to the scheduler.

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

pub fn run(shared: Arc<Shared>, rx: Receiver<EncodeJob>) {
    while let Ok(job) = rx.recv() {
        // Someone else may have encoded the same piece meanwhile.
        let hit = shared
            .media_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&job.key);
        let result = match hit {
            Some(e) => Ok(e),
            None => encode(&shared, &job.key, &job.media),
        };
        let msg = Msg::Encoded {
            slot: job.slot,
            serial: job.serial,
            result,
        };
        if job.back.send(msg).is_err() {
            break;
        }
    }
}

fn encode(shared: &Shared, key: &str, media: &MediaChunk) -> Result<Arc<Vec<f32>>, Failure> {
    let ctx = shared
        .media
        .as_ref()
        .ok_or_else(|| Failure::Invalid(no_encoder(media.kind)))?;
    let start = Instant::now();
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| ctx.encode(media)));
    let embd = match out {
        Ok(Ok(e)) => Arc::new(e),
        Ok(Err(e)) => return Err(classify_mtmd(e)),
        Err(panic) => {
            return Err(Failure::Internal(format!(
                "the engine failed while serving this request: {}",
                panic_text(&*panic)
            )));
        }
    };
    shared.metrics.media_encoded(media.kind, start.elapsed());
    shared
        .media_cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, embd.clone());
    Ok(embd)
}
