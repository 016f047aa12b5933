//! The [`ImageEncoder`] backed by an mmproj file: `clip` preprocessing (strategy from the
//! projector type, constants from the mmproj hparams) and `clip`'s vision tower + projector.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip::ClipModel;
use clip::preprocess::{PreprocessParams, PreprocessedImage, Strategy, preprocess};

use crate::bitmap::Bitmap;
use crate::encoder::{EncoderError, ImageEncoder, ImageFraming, PreparedImage};

/// Why an mmproj could not be turned into an encoder for a text model.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: not a clip (mmproj) file: general.architecture is {found:?}", path.display())]
    NotClip { path: PathBuf, found: String },
    #[error("{}: {source}", path.display())]
    Clip {
        path: PathBuf,
        #[source]
        source: clip::ClipError,
    },
    #[error("{}: unsupported projector type '{projector}' for images", path.display())]
    UnsupportedProjector { path: PathBuf, projector: String },
    #[error("mmproj produces {encoder}-dim embeddings, text model has n_embd {model}")]
    DimMismatch { encoder: usize, model: usize },
    #[error(transparent)]
    Mtmd(#[from] crate::MtmdError),
    #[error("cannot start {n_threads} encoder threads: {detail}")]
    Threads { n_threads: usize, detail: String },
}

/// Vision encoder of an mmproj, preprocessing included.
pub struct ClipEncoder {
    model: ClipModel,
    strategy: Strategy,
    params: PreprocessParams,
    framing: ImageFraming,
    /// Gemma 3: tokens per image are fixed by the square input and the pooling.
    fixed_tokens: usize,
    /// Runs encodes on a private pool of this size; `None` uses rayon's global pool.
    pool: Option<rayon::ThreadPool>,
}

impl ClipEncoder {
    /// Loads `mmproj_path`. `min_tokens`/`max_tokens` bound dynamic-resolution images
    /// (`None`: the llama.cpp defaults 8 and 4096); `n_threads` sizes a private pool.
    pub fn load(
        mmproj_path: &Path,
        min_tokens: Option<u32>,
        max_tokens: Option<u32>,
        n_threads: Option<usize>,
    ) -> Result<Self, LoadError> {
        let path = mmproj_path.to_path_buf();
        let clip_err = |source| LoadError::Clip {
            path: path.clone(),
            source,
        };
        let file = gguf::GgufFile::open(mmproj_path).map_err(|source| {
            clip_err(clip::ClipError::Open {
                path: path.clone(),
                source,
            })
        })?;
        let arch = file
            .opt_str("general.architecture")
            .ok()
            .flatten()
            .unwrap_or("<missing>")
            .to_owned();
        if arch != "clip" {
            return Err(LoadError::NotClip { path, found: arch });
        }
        // An audio-only mmproj lacks the vision keys: name its projector rather than a key.
        let has_vision = file.opt_bool("clip.has_vision_encoder").ok().flatten();
        if has_vision != Some(true)
            && file.opt_bool("clip.has_audio_encoder").ok().flatten() == Some(true)
        {
            let projector = file
                .opt_str("clip.audio.projector_type")
                .ok()
                .flatten()
                .or_else(|| file.opt_str("clip.projector_type").ok().flatten())
                .unwrap_or("<missing>");
            return Err(LoadError::UnsupportedProjector {
                path,
                projector: projector.to_owned(),
            });
        }
        let model = ClipModel::from_gguf(file).map_err(clip_err)?;
        let projector = model.projector_type().to_owned();
        let unsupported = || LoadError::UnsupportedProjector {
            path: path.clone(),
            projector: projector.clone(),
        };
        let strategy = Strategy::for_projector(&projector).ok_or_else(unsupported)?;
        let framing = ImageFraming::for_projector(&projector).ok_or_else(unsupported)?;
        let hp = model.hparams();
        let merge = match strategy {
            // The merge of dynamic models sets the token grid; Qwen's default is 2.
            Strategy::DynamicResolution => {
                if hp.n_merge == 0 {
                    2
                } else {
                    hp.n_merge
                }
            }
            Strategy::FixedSquare => 1,
        };
        let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let params = PreprocessParams {
            image_size: to_u32(hp.image_size),
            patch_size: to_u32(hp.patch_size),
            merge: to_u32(merge),
            mean: hp.image_mean,
            std: hp.image_std,
            min_tokens: min_tokens.unwrap_or(8),
            max_tokens: max_tokens.unwrap_or(4096),
        };
        // Gemma 3 pools the patch grid by n_merge per side (4 when the file does not say).
        let pool_side = if hp.n_merge == 0 { 4 } else { hp.n_merge };
        let side = hp.image_size / hp.patch_size / pool_side;
        let fixed_tokens = side * side;
        let pool = match n_threads {
            Some(n) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .map_err(|e| LoadError::Threads {
                        n_threads: n,
                        detail: e.to_string(),
                    })?,
            ),
            None => None,
        };
        Ok(Self {
            model,
            strategy,
            params,
            framing,
            fixed_tokens,
            pool,
        })
    }

    pub fn clip_model(&self) -> &ClipModel {
        &self.model
    }

    pub fn projector_type(&self) -> &str {
        self.model.projector_type()
    }
}

impl ImageEncoder for ClipEncoder {
    fn framing(&self) -> ImageFraming {
        self.framing.clone()
    }

    fn n_embd_out(&self) -> usize {
        self.model.n_embd_out()
    }

    fn preprocess(&self, bitmap: &Bitmap) -> Result<PreparedImage, EncoderError> {
        let pixels = preprocess(bitmap.as_clip(), self.strategy, &self.params)?;
        let (nx, ny) = match pixels.token_grid {
            Some(g) => (g.nx as usize, g.ny as usize),
            // llama.cpp lays a fixed-size image out as one row of tokens.
            None => (self.fixed_tokens, 1),
        };
        Ok(PreparedImage {
            nx,
            ny,
            n_tokens: nx * ny,
            data: Arc::new(pixels),
        })
    }

    fn encode(&self, image: &PreparedImage) -> Result<Vec<f32>, EncoderError> {
        let pixels = image
            .data
            .downcast_ref::<PreprocessedImage>()
            .ok_or("prepared image was not made by this encoder")?;
        let run = || {
            self.model
                .encode(&pixels.data, pixels.width as usize, pixels.height as usize)
        };
        let embd = match &self.pool {
            Some(pool) => pool.install(run)?,
            None => run()?,
        };
        if embd.n_tokens != image.n_tokens {
            return Err(format!(
                "encoder made {} tokens, preprocessing planned {}",
                embd.n_tokens, image.n_tokens
            )
            .into());
        }
        Ok(embd.data)
    }
}
