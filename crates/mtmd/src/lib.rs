//! Multimodal prompts for the text decoder, after llama.cpp's libmtmd.
//!
//! A prompt carries media markers (`<__media__>`), one per [`Media`] item (a [`Bitmap`] or an
//! [`Audio`] clip). [`Context::tokenize`] turns it into [`Chunks`]: runs of text tokens and media
//! chunks that know their token grid and decoder positions. [`Context::eval_chunks`] encodes
//! each media chunk (through a [`MediaEncoder`]) and feeds text and embeddings to an
//! [`llm::Session`] at the right positions: sequential for Gemma 3 (image tokens non-causal
//! among themselves), the 2-D M-RoPE grid for Qwen2-VL / Qwen2.5-VL / Qwen3-VL. Everything
//! projector-specific comes from the projector's descriptor in `clip`.

pub mod chunk;
pub mod clip_encoder;
pub mod context;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod media;
pub mod prefix;
pub mod tokenize;

pub use chunk::{Chunk, Chunks, ImagePositions, MediaChunk};
pub use clip_encoder::{ClipEncoder, LoadError};
pub use context::{ChunkProgress, Context, ContextParams, DEFAULT_MEDIA_MARKER};
pub use encoder::{
    EncodeProgress, EncoderError, Framing, MediaEncoder, Placement, PreparedMedia, TileFraming,
};
pub use error::{MtmdError, Result};
pub use eval::{EvalOutput, eval_chunks, eval_media};
pub use media::{
    Audio, AudioError, Bitmap, BitmapError, DecodeOptions, Media, MediaItem, MediaKind, Pcm,
};
pub use prefix::{CellKey, chunk_keys, chunks_after, reusable_prefix};
pub use tokenize::tokenize_with_media;
