//! The library's entry point: a text model plus an image encoder, turning prompts with media
//! into chunks and chunks into KV cache state.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use llm::{Model, Session};

use crate::chunk::{Chunk, Chunks, ImagePositions, MediaChunk};
use crate::clip_encoder::{ClipEncoder, LoadError};
use crate::encoder::{EncodeProgress, Framing, MediaEncoder, PreparedMedia};
use crate::error::{MtmdError, Result};
use crate::eval::{EvalOutput, eval_chunks};
use crate::media::{Media, MediaKind};
use crate::tokenize::tokenize_with_media;

/// The marker llama.cpp uses for "a media item goes here".
pub const DEFAULT_MEDIA_MARKER: &str = "<__media__>";

/// Settings of a [`Context`].
#[derive(Debug, Clone)]
pub struct ContextParams {
    /// Text that stands for one media item in prompts.
    pub media_marker: String,
    /// Threads of a private pool for media encoding (`None`: rayon's global pool).
    pub n_threads: Option<usize>,
    /// Lower bound on tokens per dynamic-resolution image (`None`: the projector's default,
    /// 8 for the Qwen-VL family as in llama.cpp).
    pub image_min_tokens: Option<u32>,
    /// Upper bound on tokens per dynamic-resolution image (`None`: the projector's default).
    pub image_max_tokens: Option<u32>,
    /// Where the encoder's transformer blocks run (the CPU by default).
    pub device: llm::Device,
}

impl Default for ContextParams {
    fn default() -> Self {
        Self {
            media_marker: DEFAULT_MEDIA_MARKER.into(),
            n_threads: None,
            image_min_tokens: None,
            image_max_tokens: None,
            device: llm::Device::Cpu,
        }
    }
}

/// A text model with its media encoder.
///
/// [`Context::new`] loads the encoder from an mmproj file; any other [`MediaEncoder`] (a
/// test double, a cache) plugs in through [`Context::with_encoder`].
///
/// ```no_run
/// # use std::sync::Arc;
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let model = Arc::new(llm::Model::load("model.gguf")?);
/// let ctx = mtmd::Context::new("mmproj.gguf", model.clone(), mtmd::ContextParams::default())?;
/// let image = mtmd::Bitmap::from_file("photo.png")?;
/// let chunks = ctx.tokenize("Describe <__media__> please.", &[&image])?;
/// let mut session = model.new_session(0, llm::KvType::F16)?;
/// let out = ctx.eval_chunks(&mut session, &chunks, true)?;
/// # let _ = out; Ok(()) }
/// ```
pub struct Context {
    model: Arc<Model>,
    encoder: Box<dyn MediaEncoder>,
    framing: Framing,
    positions: ImagePositions,
    params: ContextParams,
    progress: Option<ChunkProgress>,
}

/// Called with (chunk, layers done, layers in all) while a media chunk encodes; see
/// [`Context::set_encode_progress`].
pub type ChunkProgress = Arc<dyn Fn(&MediaChunk, usize, usize) + Send + Sync>;

impl Context {
    /// Loads the media encoder of `mmproj_path` for `model`. Fails with one clear message when
    /// the file is not an mmproj, its projector is unsupported, or its embeddings do not have
    /// the text model's width.
    pub fn new(
        mmproj_path: impl AsRef<Path>,
        model: Arc<Model>,
        params: ContextParams,
    ) -> std::result::Result<Self, LoadError> {
        let mut encoder = ClipEncoder::load(
            mmproj_path.as_ref(),
            params.image_min_tokens,
            params.image_max_tokens,
            params.n_threads,
        )?;
        encoder.place(mmproj_path.as_ref(), &params.device)?;
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
        encoder: Box<dyn MediaEncoder>,
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
        // The text model decides the position scheme of images, as llama.cpp keys it on the
        // rope type (audio is always sequential).
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
            progress: None,
        })
    }

    /// Every later [`encode`](Self::encode) (and so [`eval_chunks`](Self::eval_chunks))
    /// reports its layers to `progress` (`None`: nothing is reported).
    pub fn set_encode_progress(&mut self, progress: Option<ChunkProgress>) {
        self.progress = progress;
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn media_marker(&self) -> &str {
        &self.params.media_marker
    }

    /// Whether the encoder takes media of `kind` (libmtmd's `mtmd_support_vision` /
    /// `mtmd_support_audio`).
    pub fn supports(&self, kind: MediaKind) -> bool {
        self.encoder.kind() == kind
    }

    pub fn supports_vision(&self) -> bool {
        self.supports(MediaKind::Image)
    }

    pub fn supports_audio(&self) -> bool {
        self.supports(MediaKind::Audio)
    }

    /// Splits `text` at the media markers (one per media item, in order) and tokenizes it;
    /// every item is preprocessed to learn its token grid. Takes `&[&Bitmap]` or `&[Media]`.
    pub fn tokenize<'a, M>(&self, text: &str, media: &[M]) -> Result<Chunks>
    where
        M: Into<Media<'a>> + Copy,
    {
        tokenize_with_media(
            &self.model.tokenizer,
            text,
            &self.params.media_marker,
            &self.framing,
            media.len(),
            |k| self.media_chunks(k, media[k].into()),
        )
    }

    /// The chunks of one media item (one per piece the encoder prepares).
    fn media_chunks(&self, media_index: usize, media: Media<'_>) -> Result<Vec<Chunk>> {
        let kind = media.kind();
        if !self.supports(kind) {
            return Err(MtmdError::UnsupportedMedia {
                id: media.id().to_string(),
                kind: kind.name(),
                supported: self.encoder.kind().name(),
            });
        }
        let pieces = self
            .encoder
            .prepare(media)
            .map_err(|source| MtmdError::Encoder {
                id: media.id().to_string(),
                source,
            })?;
        let positions = match kind {
            MediaKind::Image => self.positions,
            MediaKind::Audio => ImagePositions::Sequential,
        };
        pieces
            .into_iter()
            .enumerate()
            .map(|(piece, prepared)| {
                if prepared.nx * prepared.ny != prepared.n_tokens || prepared.n_tokens == 0 {
                    return Err(MtmdError::BadGrid {
                        nx: prepared.nx,
                        ny: prepared.ny,
                        n_tokens: prepared.n_tokens,
                    });
                }
                Ok(Chunk::media(MediaChunk {
                    kind,
                    id: media.id().to_string(),
                    media_index,
                    piece,
                    positions,
                    non_causal: self.encoder.non_causal(),
                    prepared,
                }))
            })
            .collect()
    }

    /// Runs the encoder on one media chunk: `[n_tokens, n_embd_inp]`.
    pub fn encode(&self, image: &MediaChunk) -> Result<Vec<f32>> {
        match &self.progress {
            Some(hook) => self.encode_with_progress(image, &|done, total| hook(image, done, total)),
            None => self.encode_with_progress(image, &|_, _| {}),
        }
    }

    /// Approximate floating-point operations of encoding `image` (`None`: the encoder
    /// cannot tell).
    pub fn encode_flops(&self, image: &MediaChunk) -> Option<u64> {
        self.encoder.flops(&image.prepared)
    }

    /// [`encode`](Self::encode) reporting `progress(done, total)` as the encoder's layers
    /// finish (instead of the hook of [`set_encode_progress`](Self::set_encode_progress)).
    pub fn encode_with_progress(
        &self,
        image: &MediaChunk,
        progress: EncodeProgress<'_>,
    ) -> Result<Vec<f32>> {
        let embd = self.encoder.encode_with_progress(&image.prepared, progress);
        tensor::alloc::release_free_memory();
        let embd = embd.map_err(|source| MtmdError::Encoder {
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

    /// Encodes several media chunks in as few encoder passes as the encoder allows (the
    /// tiles of an image, the images of a prompt or of several requests; libmtmd's batched
    /// encode), one result each as [`encode`](Self::encode) gives it. Progress (the hook of
    /// [`set_encode_progress`](Self::set_encode_progress)) is reported per encoder pass: against
    /// each chunk when they go one by one, against the n-th chunk for the n-th batched pass.
    pub fn encode_batch(&self, chunks: &[&MediaChunk]) -> Result<Vec<Vec<f32>>> {
        let Some(first) = chunks.first() else {
            return Ok(Vec::new());
        };
        if chunks.len() == 1 {
            return Ok(vec![self.encode(first)?]);
        }
        let pieces: Vec<&PreparedMedia> = chunks.iter().map(|c| &c.prepared).collect();
        // Each encoder pass reports its layers 1..=total; a restart is the next pass, which
        // for an encoder that goes one by one is the next chunk.
        let pass = AtomicUsize::new(0);
        let last = AtomicUsize::new(0);
        let hook = |done: usize, total| {
            if done <= last.swap(done, Ordering::Relaxed) {
                pass.fetch_add(1, Ordering::Relaxed);
            }
            let at = pass.load(Ordering::Relaxed).min(chunks.len() - 1);
            if let Some(h) = &self.progress {
                h(chunks[at], done, total)
            }
        };
        let out = self.encoder.encode_batch(&pieces, &hook);
        tensor::alloc::release_free_memory();
        let out = out.map_err(|source| MtmdError::Encoder {
            id: first.id.clone(),
            source,
        })?;
        let n_embd = self.encoder.n_embd_out();
        if out.len() != chunks.len() {
            return Err(MtmdError::Encoder {
                id: first.id.clone(),
                source: format!("{} results for {} chunks", out.len(), chunks.len()).into(),
            });
        }
        for (embd, chunk) in out.iter().zip(chunks) {
            if embd.len() != chunk.n_tokens() * n_embd {
                return Err(MtmdError::EmbeddingSize {
                    id: chunk.id.clone(),
                    n_tokens: chunk.n_tokens(),
                    n_embd,
                    got: embd.len(),
                });
            }
        }
        Ok(out)
    }

    /// Encodes and decodes every chunk into `session`; see [`eval_chunks`]. The media
    /// chunks are encoded first, together ([`encode_batch`](Self::encode_batch)).
    pub fn eval_chunks(
        &self,
        session: &mut Session,
        chunks: &Chunks,
        logits_last: bool,
    ) -> Result<EvalOutput> {
        let media: Vec<&MediaChunk> = chunks
            .iter()
            .filter_map(|c| match c {
                Chunk::Image(m) | Chunk::Audio(m) => Some(m),
                Chunk::Text(_) => None,
            })
            .collect();
        let mut embeddings = self.encode_batch(&media)?.into_iter();
        eval_chunks(
            &self.model,
            session,
            chunks,
            |m| {
                embeddings.next().ok_or_else(|| MtmdError::Encoder {
                    id: m.id.clone(),
                    source: "this media chunk was not encoded".into(),
                })
            },
            logits_last,
        )
    }
}
