//! The encoder trait, the loaded model and one module per architecture.

pub mod gemma3;
pub mod qwen2vl;
pub mod qwen3vl;

use std::path::Path;

use gguf::GgufFile;

use crate::hparams::VisionHparams;
use crate::vit::WeightLoader;
use crate::{ClipError, registry};

/// Projector output for one image: `n_tokens` rows of `n_embd_out` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub n_tokens: usize,
    /// Token grid (columns, rows) as the text model's M-RoPE sees it.
    pub nx: usize,
    pub ny: usize,
    /// `[n_tokens, n_embd_out]` row-major.
    pub data: Vec<f32>,
}

/// One vision architecture: planar `[3, height, width]` pixels in, embeddings out.
pub trait Encoder: Send + Sync {
    fn encode(&self, pixels: &[f32], width: usize, height: usize) -> Result<Embeddings, ClipError>;
    /// Width of each output row (for Qwen3-VL, `n_embd * (1 + n_deepstack)`).
    fn n_embd_out(&self) -> usize;
}

/// A loaded mmproj: hyper-parameters plus the encoder picked by its projector type.
pub struct ClipModel {
    hparams: VisionHparams,
    encoder: Box<dyn Encoder>,
    // Keeps the mapping the weight tensors borrow from alive for the model's lifetime.
    _file: GgufFile,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("projector_type", &self.hparams.projector_type)
            .field("n_embd_out", &self.n_embd_out())
            .finish_non_exhaustive()
    }
}

impl ClipModel {
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ClipError> {
        let path = path.as_ref();
        let file = GgufFile::open(path).map_err(|source| ClipError::Open {
            path: path.to_owned(),
            source,
        })?;
        Self::from_gguf(file)
    }

    pub fn from_gguf(file: GgufFile) -> Result<Self, ClipError> {
        let hparams = VisionHparams::from_gguf(&file)?;
        let build = registry::lookup(&hparams.projector_type)?;
        let encoder = build(&WeightLoader::new(&file), &hparams)?;
        Ok(Self {
            hparams,
            encoder,
            _file: file,
        })
    }

    pub fn hparams(&self) -> &VisionHparams {
        &self.hparams
    }

    pub fn projector_type(&self) -> &str {
        &self.hparams.projector_type
    }

    /// What the text model's input rows must be wide.
    pub fn n_embd_out(&self) -> usize {
        self.encoder.n_embd_out()
    }

    /// Encodes planar `[3, height, width]` preprocessed pixels.
    pub fn encode(
        &self,
        pixels: &[f32],
        width: usize,
        height: usize,
    ) -> Result<Embeddings, ClipError> {
        self.encoder.encode(pixels, width, height)
    }
}
