//! The engine: `--parallel` slots over one loaded model, decoded together in steps
//! (continuous batching), a queue, KV prefix reuse per slot and an LRU cache of media
//! embeddings (images and audio windows) keyed by content hash and piece.
//!
//! Threads: `submit` hands the request to the scheduler (`scheduler.rs`), which owns the
//! queue and every slot (`slot.rs`, each with its KV cache) and runs one batched step after
//! another on rayon's global pool; media chunks are encoded on the encoder thread
//! (`encoder.rs`). Events go back to the client on a tokio channel, which std threads can
//! send on without a runtime; a dropped receiver cancels the request.

mod encoder;
mod media_cache;
mod metrics;
mod scheduler;
mod slot;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use llm::{KvPool, KvType, Model};
use tokio::sync::mpsc;

use crate::backend::{Backend, EngineMetrics, Event, ModelInfo, Request};
use media_cache::MediaCache;
use metrics::Metrics;
use scheduler::{Job, Msg};

/// What `Engine::load` needs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model_path: PathBuf,
    pub mmproj_path: Option<PathBuf>,
    /// Name clients use for the model (default: the model file's stem).
    pub alias: Option<String>,
    /// Context size of each slot (0: the model's training context, at most 4096).
    pub n_ctx: usize,
    /// Slots: requests served at once.
    pub n_slots: usize,
    /// KV cells shared by all slots (0: `n_slots` x the context size). Each slot still holds
    /// at most `n_ctx`; idle slots' kept prefixes are dropped, least recently used first,
    /// when a running request needs their cells.
    pub kv_pool_cells: usize,
    pub kv_type: KvType,
    /// Bound of the media-embedding cache (images and audio), in bytes (0: no cache).
    pub media_cache_bytes: usize,
    /// Threads of the media encoder's pool (`None`: rayon's global pool).
    pub n_threads: Option<usize>,
    pub image_min_tokens: Option<u32>,
    pub image_max_tokens: Option<u32>,
    /// Where the text model runs (`Device::Cpu`, or a GPU with `n_gpu_layers` layers on it).
    pub device: llm::Device,
    /// llama.cpp's `-ngl` count (`None`: every layer and the output head).
    pub n_gpu_layers: Option<usize>,
    /// Where the media encoder's blocks run (`--no-mmproj-offload` keeps them on the CPU).
    pub encoder_device: llm::Device,
}

/// Why [`Engine::load`] / [`Engine::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the number of slots (--parallel) must be at least 1")]
    NoSlots,
    /// The text model could not be loaded; the message names the file.
    #[error("{message}")]
    Model { path: PathBuf, message: String },
    /// The mmproj could not be loaded; the message names the file.
    #[error("{message}")]
    Mmproj { path: PathBuf, message: String },
    /// A slot's KV cache could not be allocated (e.g. GPU memory).
    #[error("allocating the KV cache of slot {slot}: {source}")]
    Cache {
        slot: usize,
        #[source]
        source: llm::LlmError,
    },
    #[error("could not start {what}")]
    Thread {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// `error` as a message that names `path` (prepended unless the error already names it).
fn naming(path: &std::path::Path, error: impl std::fmt::Display) -> String {
    let msg = error.to_string();
    if msg.contains(&*path.to_string_lossy()) {
        msg
    } else {
        format!("{}: {msg}", path.display())
    }
}

/// What the scheduler and the encoder thread share.
pub(crate) struct Shared {
    pub model: Arc<Model>,
    pub media: Option<mtmd::Context>,
    /// Cells per slot.
    pub n_ctx: usize,
    /// The cells all slots lease from.
    pub kv_pool: Arc<KvPool>,
    pub media_cache: Mutex<MediaCache>,
    pub metrics: Metrics,
}

/// The loaded model and its slots; implements [`Backend`] for the HTTP layer.
pub struct Engine {
    info: ModelInfo,
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    dispatcher: Option<JoinHandle<()>>,
}

/// The scheduler decodes on its own stack: give it what the main thread has.
const SCHEDULER_STACK: usize = 8 << 20;

impl Engine {
    /// Loads the model (and the mmproj, when given) and starts the slot threads. Blocking.
    pub fn load(config: EngineConfig) -> Result<Engine, LoadError> {
        if config.n_slots == 0 {
            return Err(LoadError::NoSlots);
        }
        let path = &config.model_path;
        let mut model = Model::load(path).map_err(|e| LoadError::Model {
            path: path.clone(),
            message: naming(path, e),
        })?;
        model
            .place(&config.device, config.n_gpu_layers)
            .map_err(|e| LoadError::Model {
                path: path.clone(),
                message: format!("placing {} on {}: {e}", path.display(), config.device),
            })?;
        let model = Arc::new(model);
        let media = match &config.mmproj_path {
            Some(path) => {
                let params = mtmd::ContextParams {
                    n_threads: config.n_threads,
                    image_min_tokens: config.image_min_tokens,
                    image_max_tokens: config.image_max_tokens,
                    device: config.encoder_device.clone(),
                    ..mtmd::ContextParams::default()
                };
                let ctx = mtmd::Context::new(path, model.clone(), params).map_err(|e| {
                    LoadError::Mmproj {
                        path: path.clone(),
                        message: naming(path, e),
                    }
                })?;
                Some(ctx)
            }
            None => None,
        };
        Self::start(&config, model, media)
    }

    /// Starts the slots over an already loaded model and media context (`load` without the
    /// files; tests plug in their own encoder this way).
    pub fn start(
        config: &EngineConfig,
        model: Arc<Model>,
        media: Option<mtmd::Context>,
    ) -> Result<Engine, LoadError> {
        if config.n_slots == 0 {
            return Err(LoadError::NoSlots);
        }
        let n_ctx = model.resolve_n_ctx(config.n_ctx);
        let pool_cells = match config.kv_pool_cells {
            0 => n_ctx.saturating_mul(config.n_slots),
            n => n,
        };
        let vision = media.as_ref().is_some_and(|m| m.supports_vision());
        let audio = media.as_ref().is_some_and(|m| m.supports_audio());
        let mut info = model_info(config, &model, n_ctx, vision, audio);
        info.kv_pool_cells = pool_cells;
        let shared = Arc::new(Shared {
            model,
            media,
            n_ctx,
            kv_pool: Arc::new(KvPool::new(pool_cells)),
            media_cache: Mutex::new(MediaCache::new(config.media_cache_bytes)),
            metrics: Metrics::default(),
        });

        let mut sessions = Vec::with_capacity(config.n_slots);
        for index in 0..config.n_slots {
            let cache_error = |source| LoadError::Cache {
                slot: index,
                source,
            };
            let mut session = shared
                .model
                .new_session(n_ctx, config.kv_type)
                .map_err(cache_error)?;
            session
                .cache
                .attach_pool(shared.kv_pool.clone())
                .map_err(cache_error)?;
            sessions.push(session);
        }
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let encoder = match shared.media {
            Some(_) => {
                let (enc_tx, enc_rx) = std::sync::mpsc::channel();
                let enc_shared = shared.clone();
                std::thread::Builder::new()
                    .name("mtmd-encoder".into())
                    .stack_size(SCHEDULER_STACK)
                    .spawn(move || encoder::run(enc_shared, enc_rx))
                    .map_err(|source| LoadError::Thread {
                        what: "the media encoder thread",
                        source,
                    })?;
                Some(enc_tx)
            }
            None => None,
        };
        let sched_shared = shared.clone();
        let back = tx.clone();
        let dispatcher = std::thread::Builder::new()
            .name("mtmd-scheduler".into())
            .stack_size(SCHEDULER_STACK)
            .spawn(move || scheduler::run(sched_shared, rx, back, sessions, encoder))
            .map_err(|source| LoadError::Thread {
                what: "the scheduler thread",
                source,
            })?;
        Ok(Engine {
            info,
            shared,
            tx,
            dispatcher: Some(dispatcher),
        })
    }
}

fn model_info(
    config: &EngineConfig,
    model: &Model,
    n_ctx: usize,
    vision: bool,
    audio: bool,
) -> ModelInfo {
    let stem = config
        .model_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| config.model_path.display().to_string());
    let chat_template = model.template.as_ref().ok().map(|t| match t.jinja() {
        Some(j) => j.source().to_string(),
        None => t
            .builtin_format()
            .map(|f| f.name().to_string())
            .unwrap_or_default(),
    });
    ModelInfo {
        id: config.alias.clone().unwrap_or(stem),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        n_ctx,
        n_ctx_train: model.hparams().n_ctx_train,
        n_slots: config.n_slots,
        kv_pool_cells: 0,
        n_vocab: model.tokenizer.n_vocab(),
        n_params: model.n_params(),
        device: model.device_summary(),
        size_bytes: model.size_bytes(),
        vision,
        audio,
        chat_template,
        model_path: config.model_path.display().to_string(),
        mmproj_path: config.mmproj_path.as_ref().map(|p| p.display().to_string()),
    }
}

impl Backend for Engine {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn submit(&self, request: Request) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.metrics.queued();
        if let Err(std::sync::mpsc::SendError(Msg::Submit(job))) = self.tx.send(Msg::Submit(Job {
            request,
            tx,
            submitted: Instant::now(),
        })) {
            self.shared.metrics.dequeued();
            let _ = job.tx.send(Event::Error(scheduler::stopped()));
        }
        rx
    }

    fn metrics(&self) -> EngineMetrics {
        let (hits, bytes) = {
            let c = self
                .shared
                .media_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            (c.hits(), c.bytes() as u64)
        };
        let mut m = self.shared.metrics.snapshot(hits, bytes);
        m.kv_pool_cells = self.shared.kv_pool.capacity() as u64;
        m.kv_pool_cells_used = self.shared.kv_pool.used() as u64;
        m
    }
}

impl Drop for Engine {
    /// Stops the scheduler: queued and running requests are dropped (their receivers
    /// close); the encoder thread ends when its queue closes.
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(h) = self.dispatcher.take() {
            let _ = h.join();
        }
    }
}
