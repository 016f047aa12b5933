//! The engine: `--parallel` slots on worker threads over one loaded model, a queue, KV prefix
//! reuse per slot and an LRU cache of image embeddings keyed by content hash.

use std::path::PathBuf;

use llm::KvType;

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
    pub kv_type: KvType,
    /// Bound of the image-embedding cache, in bytes (0: no cache).
    pub media_cache_bytes: usize,
    /// Threads of the image encoder's pool (`None`: rayon's global pool).
    pub n_threads: Option<usize>,
    pub image_min_tokens: Option<u32>,
    pub image_max_tokens: Option<u32>,
}
