//! The boundary between HTTP and the engine. Handlers turn wire requests into a [`Request`]
//! (messages with media already decoded into bitmaps and audio clips), hand it to a [`Backend`] and relay
//! its [`Event`]s; they never touch tokens, tensors or the KV cache. The engine (worker
//! threads owning the model) implements `Backend`; router tests use a fake one.

use std::time::Duration;

use llm::chat::ChatMessage;
use llm::sampling::SamplingParams;
use tokio::sync::mpsc;

/// What the loaded model is and accepts (for `/v1/models`, `/props` and validation).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The name clients use (`--alias`, else the model file's name).
    pub id: String,
    /// Unix time the model was loaded.
    pub created: u64,
    /// Context size of each slot, in tokens.
    pub n_ctx: usize,
    /// The model's training context.
    pub n_ctx_train: usize,
    pub n_slots: usize,
    /// KV cells shared by all slots (a slot holds cells only while it needs them).
    pub kv_pool_cells: usize,
    pub n_vocab: usize,
    pub n_params: u64,
    pub size_bytes: u64,
    /// Where the model runs: `cpu`, or the GPU adapter and the layers on it.
    pub device: String,
    /// Images are accepted (an mmproj with a vision encoder is loaded).
    pub vision: bool,
    /// Audio is accepted (an mmproj with an audio encoder is loaded).
    pub audio: bool,
    /// The chat template's source (Jinja) or built-in format name; `None` when the model has none.
    pub chat_template: Option<String>,
    pub model_path: String,
    pub mmproj_path: Option<String>,
}

impl ModelInfo {
    /// Input modalities in OpenAI-ish words: always "text", plus "image" / "audio".
    pub fn modalities(&self) -> Vec<&'static str> {
        let mut m = vec!["text"];
        if self.vision {
            m.push("image");
        }
        if self.audio {
            m.push("audio");
        }
        m
    }
}

/// One decoded media item of a prompt (owned; `mtmd::Media` is its borrowed view).
pub use mtmd::MediaItem;

/// The prompt of a request.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// A conversation rendered through the model's chat template (with the generation prompt).
    /// Every media part of `messages` is a bare placeholder (`ContentPart::image()` for images,
    /// an `input_audio` part with empty data for audio); `media` holds the decoded items in
    /// order of appearance, each with its content hash as id.
    Chat {
        messages: Vec<ChatMessage>,
        media: Vec<MediaItem>,
    },
    /// Raw text (`/v1/completions`), tokenized with BOS per the model and special tokens parsed.
    Text(String),
}

/// One generation job.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// `None`: until the model ends its answer or the slot's context is full.
    pub max_tokens: Option<usize>,
    pub stop: Vec<String>,
}

/// Why a generation ended.
pub use llm::FinishReason;

/// Token counts of a finished request (OpenAI's `usage`, image and audio tokens counted in
/// the prompt).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens, image and audio tokens included.
    pub prompt_tokens: usize,
    /// Prompt tokens that were already in the slot's KV cache (not evaluated again).
    pub cached_tokens: usize,
    pub completion_tokens: usize,
}

/// What the engine reports for one request, in order: `Started`, any number of `Text`, then
/// exactly one of `Done` or `Error`. Dropping the receiver cancels the request (queued or
/// running).
#[derive(Debug, Clone)]
pub enum Event {
    /// A slot took the request and evaluated its prompt.
    Started {
        prompt_tokens: usize,
    },
    /// The next piece of the answer (never part of a UTF-8 character or of a stop string).
    Text(String),
    Done {
        usage: Usage,
        finish: FinishReason,
        /// Prompt evaluation time (media encoding included) and generation time.
        prompt_time: Duration,
        generation_time: Duration,
    },
    Error(EngineError),
}

/// A request the engine could not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The client's fault: the prompt does not fit the context, the template cannot render
    /// these messages, an image cannot be preprocessed, ... (HTTP 400).
    #[error("{0}")]
    InvalidRequest(String),
    /// The engine's fault (HTTP 500).
    #[error("{0}")]
    Internal(String),
}

/// Engine counters for `/metrics` (monotonic totals unless said otherwise).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineMetrics {
    /// Requests finished (done or failed).
    pub requests_finished: u64,
    /// Prompt tokens of finished requests, image and audio tokens included.
    pub prompt_tokens: u64,
    /// Of those, tokens evaluated (not reused from a slot's KV cache).
    pub prompt_tokens_evaluated: u64,
    pub generated_tokens: u64,
    pub prompt_seconds: f64,
    pub generation_seconds: f64,
    /// Image chunks (images or their tiles) run through the vision encoder, and the time
    /// spent there.
    pub images_encoded: u64,
    pub image_encode_seconds: f64,
    /// Audio chunks (windows of at most 30 s) run through the audio encoder, and the time
    /// spent there.
    pub audio_encoded: u64,
    pub audio_encode_seconds: f64,
    /// Media chunks whose embeddings came from the media cache instead of the encoder.
    pub media_cache_hits: u64,
    /// Gauge: bytes held by the media cache now.
    pub media_cache_bytes: u64,
    /// Gauge: requests waiting for a slot now.
    pub queue_depth: u64,
    /// Gauge: slots busy now.
    pub slots_busy: u64,
    /// Gauge: KV cells in the pool shared by the slots (`--kv-pool`).
    pub kv_pool_cells: u64,
    /// Gauge: of those, cells leased to slots now (running requests and kept prefixes).
    pub kv_pool_cells_used: u64,
    /// Idle slots' cached prefixes dropped to make room in the pool.
    pub kv_evictions: u64,
    /// Sequences decoded together per scheduler step (continuous batching).
    pub step_sequences: Histogram,
    /// Media chunks per encoder pass (an image's tiles and requests' images go together).
    pub encode_batch_chunks: Histogram,
    /// Seconds a request waited in the queue for a slot.
    pub queue_wait_seconds: Histogram,
    /// Seconds from a request's arrival to its first generated token.
    pub time_to_first_token_seconds: Histogram,
}

/// A Prometheus-style histogram: counts of observations at or below each bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending (the `+Inf` bucket is `count`).
    pub bounds: Vec<f64>,
    /// Observations `<= bounds[i]` (cumulative).
    pub cumulative: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn with_bounds(bounds: &[f64]) -> Self {
        Self {
            bounds: bounds.to_vec(),
            cumulative: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(&mut self.cumulative) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// The engine as the HTTP layer sees it.
pub trait Backend: Send + Sync + 'static {
    fn info(&self) -> &ModelInfo;

    /// Queues `request`; its events arrive on the returned channel. Never blocks.
    fn submit(&self, request: Request) -> mpsc::UnboundedReceiver<Event>;

    fn metrics(&self) -> EngineMetrics;
}
