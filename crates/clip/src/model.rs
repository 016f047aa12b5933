//! A loaded mmproj: its projector descriptor, hyper-parameters (with the projector's defaults
//! filled in) and encoder.

use std::path::Path;

use gguf::GgufFile;

use crate::bitmap::Bitmap;
use crate::hparams::EncoderHparams;
use crate::models::{Embeddings, EncodeInput, Encoder};
use crate::preprocess::{ImagePiece, Placement, PreprocessParams, PreprocessedImage};
use crate::projector::{Input, Modality, Projector};
use crate::tower::Progress;
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

    /// The encoder graph (for batched encodes of raw inputs, see [`Encoder::encode_batch`]).
    pub fn encoder(&self) -> &dyn Encoder {
        &*self.encoder
    }

    /// Encodes the encoder's input (planar `[3, height, width]` pixels for vision).
    pub fn encode(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
    ) -> Result<Embeddings, ClipError> {
        self.encoder.encode(input, width, height, &|_, _| {})
    }

    /// [`encode`](Self::encode), calling `progress(done, total)` after each transformer block
    /// (`total` = blocks in the tower, `done` = 1..=total in order).
    pub fn encode_with_progress(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        self.encoder.encode(input, width, height, progress)
    }

    /// Approximate floating-point operations (one multiply-add = 2) of encoding an input of
    /// `width` × `height` (pixels for vision; frames × mel bins for audio) into `n_out` rows:
    /// the stem (patch embedding or the audio convolutions), every weight matrix of the
    /// transformer blocks at the tower's token count, attention (`4·n·n_kv·n_embd` per layer,
    /// over the window for windowed layers) and the projector's matrices at `n_out` rows.
    /// Norms, activations, rope and pooling are left out: they are a few percent at most.
    pub fn encode_flops(&self, width: usize, height: usize, n_out: usize) -> u64 {
        let hp = &self.hparams;
        let (prefix, mm) = match hp.modality {
            Modality::Vision => ("v.", "mm."),
            Modality::Audio => ("a.", "mm.a."),
        };
        let matrices = |keep: &dyn Fn(&str) -> bool| -> u64 {
            self._file
                .tensors()
                .iter()
                .filter(|t| {
                    let shape = t.shape();
                    shape.len() >= 2
                        && shape[shape.len() - 1] > 1
                        && !t.name.contains("bias")
                        && !t.name.contains("position_embd")
                        && keep(&t.name)
                })
                .map(|t| t.n_elements())
                .sum()
        };
        let (n, stem) = match hp.modality {
            Modality::Vision => {
                let p = hp.patch_size.max(1);
                let n = (width / p) * (height / p);
                let stem = 2 * n as u64 * matrices(&|name| name.starts_with("v.patch_embd"));
                (n, stem)
            }
            Modality::Audio => {
                // Stride 1 then stride 2 (Whisper's stem).
                let n = width.div_ceil(2);
                let conv = |name: &str| matrices(&|t| t.starts_with(name));
                let stem =
                    2 * (width as u64 * conv("a.conv1d.1.") + n as u64 * conv("a.conv1d.2."));
                (n, stem)
            }
        };
        let blocks = 2 * n as u64 * matrices(&|name| name.starts_with(&format!("{prefix}blk.")));
        let projector = 2
            * n_out as u64
            * matrices(&|name| match hp.modality {
                Modality::Vision => {
                    (name.starts_with(mm) && !name.starts_with("mm.a."))
                        || (name.starts_with(prefix)
                            && !name.starts_with("v.blk.")
                            && !name.starts_with("v.patch_embd"))
                }
                Modality::Audio => name.starts_with(mm),
            });
        // Qwen2.5-VL: all but every `n_wa_pattern`-th layer attend inside windows of
        // (window / patch)² tokens.
        let window = if hp.window_size == 0 {
            crate::models::qwen2vl::DEFAULT_WINDOW
        } else {
            hp.window_size
        } / hp.patch_size.max(1);
        let attention: u64 = (0..hp.n_layer)
            .map(|il| {
                let full = hp.n_wa_pattern == 0 || (il + 1).is_multiple_of(hp.n_wa_pattern);
                let n_kv = if full { n } else { n.min(window * window) };
                4 * (n * n_kv * hp.n_embd) as u64
            })
            .sum();
        stem + blocks + attention + projector
    }

    /// Encodes a preprocessed image and checks that the encoder made the tokens preprocessing
    /// planned.
    pub fn encode_image(&self, image: &PreprocessedImage) -> Result<Embeddings, ClipError> {
        self.encode_image_with_progress(image, &|_, _| {})
    }

    /// [`encode_image`](Self::encode_image) with a per-block progress callback.
    pub fn encode_image_with_progress(
        &self,
        image: &PreprocessedImage,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        let mut out = self.encode_images_with_progress(&[image], progress)?;
        Ok(out.pop().expect("one image, one output"))
    }

    /// Encodes several preprocessed images (an image's tiles, or several images) in as few
    /// passes as the encoder allows (see [`Encoder::encode_batch`]), one result each.
    pub fn encode_images_with_progress(
        &self,
        images: &[&PreprocessedImage],
        progress: Progress<'_>,
    ) -> Result<Vec<Embeddings>, ClipError> {
        let inputs: Vec<EncodeInput<'_>> = images
            .iter()
            .map(|image| EncodeInput {
                data: &image.data,
                width: image.width as usize,
                height: image.height as usize,
            })
            .collect();
        let out = self.encoder.encode_batch(&inputs, progress)?;
        if out.len() != images.len() {
            return Err(ClipError::BadImage(format!(
                "encoder made {} results for {} images",
                out.len(),
                images.len()
            )));
        }
        for (embd, image) in out.iter().zip(images) {
            let planned = image.token_grid.nx as usize * image.token_grid.ny as usize;
            if embd.n_tokens != planned {
                return Err(ClipError::BadImage(format!(
                    "encoder made {} tokens, preprocessing planned {planned}",
                    embd.n_tokens
                )));
            }
        }
        Ok(out)
    }
}
