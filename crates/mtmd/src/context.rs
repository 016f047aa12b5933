//! The library's entry point: a text model plus an image encoder, turning prompts with media
//! into chunks and chunks into KV cache state.

use std::path::Path;
use std::sync::Arc;

use llm::{Model, Session};

use crate::bitmap::Bitmap;
use crate::chunk::{Chunk, Chunks, ImageChunk, ImagePositions};
use crate::clip_encoder::{ClipEncoder, LoadError};
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
    /// Threads of a private pool for image encoding (`None`: rayon's global pool).
    pub n_threads: Option<usize>,
    /// Lower bound on tokens per dynamic-resolution image (`None`: 8, llama.cpp's default).
    pub image_min_tokens: Option<u32>,
    /// Upper bound on tokens per dynamic-resolution image (`None`: 4096).
    pub image_max_tokens: Option<u32>,
}

impl Default for ContextParams {
    fn default() -> Self {
        Self {
            media_marker: DEFAULT_MEDIA_MARKER.into(),
            n_threads: None,
            image_min_tokens: None,
            image_max_tokens: None,
        }
    }
}

/// A text model with its media encoder.
///
/// [`Context::new`] loads the encoder from an mmproj file; any other [`ImageEncoder`] (a
/// test double, a cache) plugs in through [`Context::with_encoder`].
///
/// ```no_run
/// # use std::sync::Arc;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = Arc::new(llm::Model::load("model.gguf")?);
/// let ctx = mtmd::Context::new("mmproj.gguf", model.clone(), mtmd::ContextParams::default())?;
/// let image = mtmd::Bitmap::from_file("photo.png")?;
/// let chunks = ctx.tokenize("Describe <__media__> please.", &[&image])?;
/// let mut session = model.new_session(0, llm::KvType::F16);
/// let out = ctx.eval_chunks(&mut session, &chunks, true)?;
/// # let _ = out; Ok(()) }
/// ```
pub struct Context {
    model: Arc<Model>,
    encoder: Box<dyn ImageEncoder>,
    framing: ImageFraming,
    positions: ImagePositions,
    params: ContextParams,
}

impl Context {
    /// Loads the vision encoder of `mmproj_path` for `model`. Fails with one clear message when
    /// the file is not an mmproj, its projector is unsupported, or its embeddings do not have
    /// the text model's width.
    pub fn new(
        mmproj_path: impl AsRef<Path>,
        model: Arc<Model>,
        params: ContextParams,
    ) -> std::result::Result<Self, LoadError> {
        let encoder = ClipEncoder::load(
            mmproj_path.as_ref(),
            params.image_min_tokens,
            params.image_max_tokens,
            params.n_threads,
        )?;
        let expected = model.hparams().n_embd_inp();
        if encoder.n_embd_out() != expected {
            return Err(LoadError::DimMismatch {
                encoder: encoder.n_embd_out(),
                model: expected,
            });
        }
        Ok(Self::with_encoder(model, Box::new(encoder), params)?)
    }

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
