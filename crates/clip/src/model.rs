//! A loaded mmproj: its projector descriptor, hyper-parameters (with the projector's defaults
//! filled in) and encoder.

use std::path::Path;

use gguf::GgufFile;

use crate::bitmap::Bitmap;
use crate::hparams::EncoderHparams;
use crate::models::{Embeddings, Encoder};
use crate::preprocess::{ImagePiece, Placement, PreprocessParams, PreprocessedImage};
use crate::projector::{Input, Projector};
use crate::vit::WeightLoader;
use crate::{ClipError, registry};

pub struct ClipModel {
    projector: &'static Projector,
    hparams: EncoderHparams,
    encoder: Box<dyn Encoder>,
    // Keeps the mapping the weight tensors borrow from alive for the model's lifetime.
    _file: GgufFile,
}

impl std::fmt::Debug for ClipModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipModel")
            .field("projector_type", &self.projector.name)
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
        let mut hparams = EncoderHparams::from_gguf(&file)?;
        let projector = registry::lookup(&hparams.projector_type)?;
        if hparams.n_merge == 0 {
            hparams.n_merge = projector.defaults.merge;
        }
        let encoder = (projector.build)(&WeightLoader::new(&file), &hparams)?;
        Ok(Self {
            projector,
            hparams,
            encoder,
            _file: file,
        })
    }

    /// Runs the encoder's transformer blocks on `device` (a GPU: weights uploaded once);
    /// the CPU keeps everything where it is.
    pub fn place(&mut self, device: &tensor::Device) -> Result<(), ClipError> {
        match device {
            tensor::Device::Cpu => Ok(()),
            #[cfg(feature = "gpu")]
            tensor::Device::Gpu(ctx) => self
                .encoder
                .offload(&tensor::exec::GpuExec::new(ctx.clone())),
        }
    }

    /// Whether the encoder's blocks run on a GPU.
    pub fn on_gpu(&self) -> bool {
        self.encoder.on_gpu()
    }

    /// The descriptor of this file's projector type.
    pub fn projector(&self) -> &'static Projector {
        self.projector
    }

    pub fn hparams(&self) -> &EncoderHparams {
        &self.hparams
    }

    pub fn projector_type(&self) -> &str {
        self.projector.name
    }

    /// What the text model's input rows must be wide.
    pub fn n_embd_out(&self) -> usize {
        self.encoder.n_embd_out()
    }

    /// Preprocessing constants from the mmproj, with the user's bounds on tokens per image
    /// (`None`: the projector's defaults; ignored by fixed-size projectors).
    pub fn preprocess_params(
        &self,
        min_tokens: Option<u32>,
        max_tokens: Option<u32>,
    ) -> PreprocessParams {
        let hp = &self.hparams;
        let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let (min, max) = match self.projector.defaults.token_limits {
            Some(d) => (min_tokens.unwrap_or(d.min), max_tokens.unwrap_or(d.max)),
            None => (0, 1 << 20),
        };
        PreprocessParams {
            image_size: to_u32(hp.image_size),
            patch_size: to_u32(hp.patch_size),
            merge: to_u32(hp.n_merge),
            mean: hp.image_mean,
            std: hp.image_std,
            min_tokens: min,
            max_tokens: max,
            longest_edge: to_u32(hp.image_longest_edge),
        }
    }

    /// Resizes and normalizes `bitmap` as this projector does; the result knows its token grid.
    /// For projectors that make one encoder input per image; tiling projectors (Idefics3) make
    /// several, see [`ClipModel::preprocess_pieces`].
    pub fn preprocess(
        &self,
        bitmap: &Bitmap,
        params: &PreprocessParams,
    ) -> Result<PreprocessedImage, ClipError> {
        match self.projector.input {
            Input::Image(preprocess) => Ok(preprocess(bitmap, params)?),
            Input::TiledImage(_) => Err(ClipError::BadImage(format!(
                "{} cuts images into tiles: use preprocess_pieces",
                self.projector.name
            ))),
            Input::AudioMel { .. } => Err(ClipError::WrongMedia {
                projector: self.projector.name,
                takes: "audio",
                given: "an image",
            }),
        }
    }

    /// Every encoder input of `bitmap` in prompt order with its place in the image: one
    /// [`Placement::Whole`] piece for most projectors, tiles then the overview for tiling ones.
    pub fn preprocess_pieces(
        &self,
        bitmap: &Bitmap,
        params: &PreprocessParams,
    ) -> Result<Vec<ImagePiece>, ClipError> {
        match self.projector.input {
            Input::TiledImage(preprocess) => Ok(preprocess(bitmap, params)?),
            _ => Ok(vec![ImagePiece {
                place: Placement::Whole,
                image: self.preprocess(bitmap, params)?,
            }]),
        }
    }

    /// Audio encoders: the mel bins of their input and the embedding rows a window of
    /// `n_frames` becomes; `None` for image encoders.
    pub fn audio_input(&self, n_frames: usize) -> Option<(usize, usize)> {
        match self.projector.input {
            Input::AudioMel { tokens } => {
                Some((self.hparams.n_mel_bins, tokens(&self.hparams, n_frames)))
            }
            Input::Image(_) | Input::TiledImage(_) => None,
        }
    }

    /// Encodes the encoder's input (planar `[3, height, width]` pixels for vision).
    pub fn encode(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
    ) -> Result<Embeddings, ClipError> {
        self.encoder.encode(input, width, height)
    }

    /// Encodes a preprocessed image and checks that the encoder made the tokens preprocessing
    /// planned.
    pub fn encode_image(&self, image: &PreprocessedImage) -> Result<Embeddings, ClipError> {
        let embd = self.encode(&image.data, image.width as usize, image.height as usize)?;
        let planned = image.token_grid.nx as usize * image.token_grid.ny as usize;
        if embd.n_tokens != planned {
            return Err(ClipError::BadImage(format!(
                "encoder made {} tokens, preprocessing planned {planned}",
                embd.n_tokens
            )));
        }
        Ok(embd)
    }
}
