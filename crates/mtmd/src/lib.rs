//! Multimodal prompts for the text decoder, after llama.cpp's libmtmd.
//!
//! A prompt carries media markers (`<__media__>`), one per [`Bitmap`]. [`Context::tokenize`]
//! turns it into [`Chunks`]: runs of text tokens and media chunks that know their token
//! grid and decoder positions. [`Context::eval_chunks`] encodes each image (through an
//! [`ImageEncoder`]) and feeds text and embeddings to an [`llm::Session`] at the right
//! positions: sequential for Gemma 3 (image tokens non-causal among themselves), the 2-D
//! M-RoPE grid for Qwen2-VL / Qwen2.5-VL / Qwen3-VL.

pub mod bitmap;
pub mod chunk;
pub mod clip_encoder;
pub mod context;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod prefix;
pub mod tokenize;

pub use bitmap::{Bitmap, BitmapError};
pub use chunk::{Chunk, Chunks, ImageChunk, ImagePositions};
pub use clip_encoder::{ClipEncoder, LoadError};
pub use context::{Context, ContextParams, DEFAULT_MEDIA_MARKER};
pub use encoder::{EncoderError, ImageEncoder, ImageFraming, PreparedImage};
pub use error::{MtmdError, Result};
pub use eval::{EvalOutput, eval_chunks, eval_image};
pub use prefix::{CellKey, chunk_keys, chunks_after, reusable_prefix};
pub use tokenize::{Framing, tokenize_with_media};
