//! Text decoding: GGUF text models (llama/mistral, qwen2/2-VL/3/3-VL, gemma3) on one shared
//! decoder, their tokenizers, chat templates and samplers.
//!
//! A batch carries token ids *or* embeddings (media encoder output) with explicit positions
//! (4 components for M-RoPE models) and a non-causal flag, so the multimodal library feeds
//! images through the same entry point as text.

pub mod batch;
pub mod chat;
pub mod decoder;
pub mod error;
pub mod generate;
pub mod hparams;
pub mod kv_cache;
pub mod kv_pool;
pub mod model;
#[cfg(feature = "gpu")]
pub mod offload;
pub mod sampling;
pub mod stop;
pub mod tokenizer;
mod utf8;
pub mod weights;

pub use batch::{Batch, BatchInput, Logits};
pub use decoder::Decoder;
pub use error::{LlmError, Result};
pub use generate::{FinishReason, GenerateParams, Generation, Generator, generate};
pub use hparams::{Arch, HParams};
pub use kv_cache::{KvCache, KvType};
pub use kv_pool::{KV_PAGE, KvPool};
pub use model::{Model, Session, StepInput};
#[cfg(feature = "gpu")]
pub use offload::Placement;
pub use tensor::Device;
pub use tokenizer::{StreamDecoder, Tokenizer, TokenizerError};
