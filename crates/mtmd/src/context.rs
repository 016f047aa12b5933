//! The library's entry point: a text model plus an image encoder, turning prompts with media
//! into chunks and chunks into KV cache state.

use std::sync::Arc;

use llm::{Model, Session};

use crate::bitmap::Bitmap;
use crate::chunk::{Chunk, Chunks, ImageChunk, ImagePositions};
use crate::encoder::{ImageEncoder, ImageFraming};
use crate::error::{MtmdError, Result};
use crate::eval::{EvalOutput, eval_chunks};
use crate::tokenize::{Framing, tokenize_with_media};

/// The marker llama.cpp uses for "a media item goes here".
pub const DEFAULT_MEDIA_MARKER: &str = "<__media__>";

/// Settings of a [`Context`].
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// Text that stands for one media item in prompts.
    pub media_marker: String,
}

impl Default for ContextParams {
    fn default() -> Self {
        Self {
            media_marker: DEFAULT_MEDIA_MARKER.into(),
        }
    }
}

/// A text model with its media encoder.
///
/// Loading from an mmproj file (`Context::new(mmproj_path, model, params)`) arrives with the
/// `clip` crate; until then any [`ImageEncoder`] plugs in through [`Context::with_encoder`].
pub struct Context {
    model: Arc<Model>,
    encoder: Box<dyn ImageEncoder>,
    framing: ImageFraming,
    positions: ImagePositions,
    params: ContextParams,
}

impl Context {
    /// Pairs `model` with `encoder`; fails when the encoder's output width is not what the
    /// model takes.
    pub fn with_encoder(
        model: Arc<Model>,
        encoder: Box<dyn ImageEncoder>,
        params: ContextParams,
    ) -> Result<Self> {
        let expected = model.hparams().n_embd_inp();
        if encoder.n_embd_out() != expected {
            return Err(MtmdError::EmbeddingWidth {
                encoder: encoder.n_embd_out(),
                model: expected,
            });
        }
        if params.media_marker.is_empty() {
            return Err(MtmdError::EmptyMarker);
        }
        // The text model decides the position scheme, as llama.cpp keys it on the rope type.
        let positions = if model.hparams().arch.uses_mrope() {
            ImagePositions::MropeGrid
        } else {
            ImagePositions::Sequential
        };
        let framing = encoder.framing();
        Ok(Self {
            model,
            encoder,
            framing,
            positions,
            params,
        })
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn media_marker(&self) -> &str {
        &self.params.media_marker
    }

    /// Splits `text` at the media markers (one per bitmap, in order) and tokenizes it;
    /// every bitmap is preprocessed to learn its token grid.
    pub fn tokenize(&self, text: &str, bitmaps: &[&Bitmap]) -> Result<Chunks> {
        let framing = Framing {
            begin: &self.framing.begin,
            end: &self.framing.end,
        };
        tokenize_with_media(
            &self.model.tokenizer,
            text,
            &self.params.media_marker,
            framing,
            bitmaps.len(),
            |k| self.image_chunk(k, bitmaps[k]).map(Chunk::Image),
        )
    }

    /// Builds the chunk of one bitmap from an already prepared grid (also what a test
    /// double or a cache of preprocessed images uses).
    fn image_chunk(&self, media_index: usize, bitmap: &Bitmap) -> Result<ImageChunk> {
        let image = self
            .encoder
            .preprocess(bitmap)
            .map_err(|source| MtmdError::Encoder {
                id: bitmap.id().to_string(),
                source,
            })?;
        if image.nx * image.ny != image.n_tokens || image.n_tokens == 0 {
            return Err(MtmdError::BadGrid {
                nx: image.nx,
                ny: image.ny,
                n_tokens: image.n_tokens,
            });
        }
        Ok(ImageChunk {
            id: bitmap.id().to_string(),
            media_index,
            positions: self.positions,
            non_causal: self.framing.non_causal,
            image,
        })
    }

    /// Runs the encoder on one image chunk: `[n_tokens, n_embd_inp]`.
    pub fn encode(&self, image: &ImageChunk) -> Result<Vec<f32>> {
        let embd = self
            .encoder
            .encode(&image.image)
            .map_err(|source| MtmdError::Encoder {
                id: image.id.clone(),
                source,
            })?;
        let n_embd = self.encoder.n_embd_out();
        if embd.len() != image.n_tokens() * n_embd {
            return Err(MtmdError::EmbeddingSize {
                id: image.id.clone(),
                n_tokens: image.n_tokens(),
                n_embd,
                got: embd.len(),
            });
        }
        Ok(embd)
    }

    /// Encodes and decodes every chunk into `session`; see [`eval_chunks`].
    pub fn eval_chunks(
        &self,
        session: &mut Session,
        chunks: &Chunks,
        logits_last: bool,
    ) -> Result<EvalOutput> {
        eval_chunks(
            &self.model,
            session,
            chunks,
            |img| self.encode(img),
            logits_last,
        )
    }
}
