//! The engine's counters, updated by the dispatcher and the slot threads and read by
//! `/metrics`. Integer counters are atomics; the float totals share one small mutex.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::backend::{EngineMetrics, Histogram, Usage};

/// Bucket bounds: sequences per step, and seconds (queue wait, time to first token).
const SEQUENCE_BOUNDS: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0];
const SECONDS_BOUNDS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

struct Histograms {
    step_sequences: Histogram,
    encode_batch: Histogram,
    queue_wait: Histogram,
    first_token: Histogram,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            step_sequences: Histogram::with_bounds(&SEQUENCE_BOUNDS),
            encode_batch: Histogram::with_bounds(&SEQUENCE_BOUNDS),
            queue_wait: Histogram::with_bounds(&SECONDS_BOUNDS),
            first_token: Histogram::with_bounds(&SECONDS_BOUNDS),
        }
    }
}

#[derive(Default)]
struct Seconds {
    prompt: f64,
    generation: f64,
    image_encode: f64,
    audio_encode: f64,
}

#[derive(Default)]
pub struct Metrics {
    requests_finished: AtomicU64,
    prompt_tokens: AtomicU64,
    prompt_tokens_evaluated: AtomicU64,
    generated_tokens: AtomicU64,
    images_encoded: AtomicU64,
    audio_encoded: AtomicU64,
    queue_depth: AtomicU64,
    slots_busy: AtomicU64,
    kv_evictions: AtomicU64,
    seconds: Mutex<Seconds>,
    histograms: Mutex<Histograms>,
}

fn dec(g: &AtomicU64) {
    // A gauge never goes below zero, even if a bug decremented it twice.
    let _ = g.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(1)));
}

impl Metrics {
    pub fn queued(&self) {
        self.queue_depth.fetch_add(1, Relaxed);
    }

    pub fn dequeued(&self) {
        dec(&self.queue_depth);
    }

    pub fn slot_busy(&self) {
        self.slots_busy.fetch_add(1, Relaxed);
    }

    pub fn slot_idle(&self) {
        dec(&self.slots_busy);
    }

    /// An idle slot's cached prefix was dropped to make room in the KV pool.
    pub fn kv_evicted(&self) {
        self.kv_evictions.fetch_add(1, Relaxed);
    }

    /// One media chunk ran through the encoder for `time`.
    pub fn media_encoded(&self, kind: mtmd::MediaKind, time: Duration) {
        match kind {
            mtmd::MediaKind::Image => {
                self.images_encoded.fetch_add(1, Relaxed);
                self.with_seconds(|s| s.image_encode += time.as_secs_f64());
            }
            mtmd::MediaKind::Audio => {
                self.audio_encoded.fetch_add(1, Relaxed);
                self.with_seconds(|s| s.audio_encode += time.as_secs_f64());
            }
        }
    }

    /// A request that ended (successfully or not) after its prompt was known.
    pub fn finished(&self, usage: &Usage, prompt_time: Duration, generation_time: Duration) {
        self.requests_finished.fetch_add(1, Relaxed);
        self.prompt_tokens
            .fetch_add(usage.prompt_tokens as u64, Relaxed);
        self.prompt_tokens_evaluated.fetch_add(
            usage.prompt_tokens.saturating_sub(usage.cached_tokens) as u64,
            Relaxed,
        );
        self.generated_tokens
            .fetch_add(usage.completion_tokens as u64, Relaxed);
        self.with_seconds(|s| {
            s.prompt += prompt_time.as_secs_f64();
            s.generation += generation_time.as_secs_f64();
        });
    }

    /// A request that failed (before or after it had a prompt).
    pub fn failed(&self) {
        self.requests_finished.fetch_add(1, Relaxed);
    }

    /// A request whose client left while it ran.
    pub fn finished_cancelled(&self) {
        self.requests_finished.fetch_add(1, Relaxed);
    }

    /// A request left the queue for a slot after `wait`.
    pub fn queue_wait(&self, wait: Duration) {
        self.with_histograms(|h| h.queue_wait.observe(wait.as_secs_f64()));
    }

    /// A request's first token came `after` its arrival.
    pub fn first_token(&self, after: Duration) {
        self.with_histograms(|h| h.first_token.observe(after.as_secs_f64()));
    }

    /// One scheduler step decoded `sequences` sequences (`rows` rows in all).
    pub fn step(&self, sequences: usize, _rows: usize, _time: Duration) {
        self.with_histograms(|h| h.step_sequences.observe(sequences as f64));
    }

    /// One encoder pass took `chunks` media chunks.
    pub fn encode_batch(&self, chunks: usize) {
        self.with_histograms(|h| h.encode_batch.observe(chunks as f64));
    }

    fn with_histograms(&self, f: impl FnOnce(&mut Histograms)) {
        let mut h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h);
    }

    fn with_seconds(&self, f: impl FnOnce(&mut Seconds)) {
        // A panic while holding this lock cannot leave the floats inconsistent: keep going.
        let mut s = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    pub fn snapshot(&self, media_cache_hits: u64, media_cache_bytes: u64) -> EngineMetrics {
        let s = self.seconds.lock().unwrap_or_else(|p| p.into_inner());
        let h = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        EngineMetrics {
            step_sequences: h.step_sequences.clone(),
            encode_batch_chunks: h.encode_batch.clone(),
            queue_wait_seconds: h.queue_wait.clone(),
            time_to_first_token_seconds: h.first_token.clone(),
            requests_finished: self.requests_finished.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            prompt_tokens_evaluated: self.prompt_tokens_evaluated.load(Relaxed),
            generated_tokens: self.generated_tokens.load(Relaxed),
            prompt_seconds: s.prompt,
            generation_seconds: s.generation,
            images_encoded: self.images_encoded.load(Relaxed),
            image_encode_seconds: s.image_encode,
            audio_encoded: self.audio_encoded.load(Relaxed),
            audio_encode_seconds: s.audio_encode,
            media_cache_hits,
            media_cache_bytes,
            queue_depth: self.queue_depth.load(Relaxed),
            slots_busy: self.slots_busy.load(Relaxed),
            kv_evictions: self.kv_evictions.load(Relaxed),
            ..EngineMetrics::default()
        }
    }
}
