//! The [`MediaEncoder`] backed by an mmproj file: everything projector-specific comes from the
//! projector's descriptor in `clip` (preprocessing, framing, defaults, attention rule).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clip::ClipModel;
use clip::preprocess::{PreprocessParams, PreprocessedImage};

use crate::encoder::{
    EncodeProgress, EncoderError, Framing, MediaEncoder, Placement, PreparedMedia,
};
use crate::media::{Audio, Media, MediaKind};
use audio::MelWindow;

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
    #[error("{}: unsupported projector type '{projector}'", path.display())]
    UnsupportedProjector { path: PathBuf, projector: String },
    #[error("mmproj produces {encoder}-dim embeddings, text model has n_embd {model}")]
    DimMismatch { encoder: usize, model: usize },
    #[error(transparent)]
    Mtmd(#[from] crate::MtmdError),
    #[error("cannot start {n_threads} encoder threads: {detail}")]
    Threads { n_threads: usize, detail: String },
}

/// The encoder of an mmproj, preprocessing included.
pub struct ClipEncoder {
    model: ClipModel,
    params: PreprocessParams,
    /// Runs encodes on a private pool of this size; `None` uses rayon's global pool.
    pool: Option<rayon::ThreadPool>,
}

impl ClipEncoder {
    /// Loads `mmproj_path`. `min_tokens`/`max_tokens` bound dynamic-resolution images
    /// (`None`: the projector's defaults); `n_threads` sizes a private pool.
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
        let model = ClipModel::from_gguf(file).map_err(clip_err)?;
        let params = model.preprocess_params(min_tokens, max_tokens);
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
            params,
            pool,
        })
    }

    /// Runs the encoder's blocks on `device`.
    pub fn place(&mut self, mmproj_path: &Path, device: &llm::Device) -> Result<(), LoadError> {
        self.model.place(device).map_err(|source| LoadError::Clip {
            path: mmproj_path.to_path_buf(),
            source,
        })
    }

    /// One piece per 30 s log-mel window of the clip.
    fn prepare_audio(&self, clip: &Audio) -> Result<Vec<PreparedMedia>, EncoderError> {
        let Some((n_mel, _)) = self.model.audio_input(0) else {
            return Err(format!("{} mmproj cannot encode audio", self.projector_type()).into());
        };
        let windows = audio::log_mel_windows(clip.pcm(), &audio::MelParams::whisper(n_mel))?;
        windows
            .into_iter()
            .map(|window| {
                let (_, n_tokens) = self
                    .model
                    .audio_input(window.n_frames)
                    .ok_or("not an audio encoder")?;
                Ok(PreparedMedia {
                    nx: n_tokens,
                    ny: 1,
                    n_tokens,
                    place: Placement::Whole,
                    data: Arc::new(window),
                })
            })
            .collect()
    }

    pub fn clip_model(&self) -> &ClipModel {
        &self.model
    }

    pub fn projector_type(&self) -> &str {
        self.model.projector_type()
    }
}

impl MediaEncoder for ClipEncoder {
    fn kind(&self) -> MediaKind {
        self.model.projector().modality().into()
    }

    fn framing(&self) -> Framing {
        self.model.projector().framing
    }

    fn non_causal(&self) -> bool {
        self.model.projector().non_causal
    }

    fn n_embd_out(&self) -> usize {
        self.model.n_embd_out()
    }

    fn prepare(&self, media: Media<'_>) -> Result<Vec<PreparedMedia>, EncoderError> {
        let bitmap = match media {
            Media::Image(bitmap) => bitmap,
            Media::Audio(clip) => return self.prepare_audio(clip),
        };
        let pieces = self.model.preprocess_pieces(bitmap, &self.params)?;
        Ok(pieces
            .into_iter()
            .map(|piece| {
                let grid = piece.image.token_grid;
                let (nx, ny) = (grid.nx as usize, grid.ny as usize);
                PreparedMedia {
                    nx,
                    ny,
                    n_tokens: nx * ny,
                    place: piece.place,
                    data: Arc::new(piece.image),
                }
            })
            .collect())
    }

    fn encode(&self, piece: &PreparedMedia) -> Result<Vec<f32>, EncoderError> {
        self.encode_with_progress(piece, &|_, _| {})
    }

    fn encode_with_progress(
        &self,
        piece: &PreparedMedia,
        progress: EncodeProgress<'_>,
    ) -> Result<Vec<f32>, EncoderError> {
        if let Some(mel) = piece.data.downcast_ref::<MelWindow>() {
            let run = || {
                self.model
                    .encode_with_progress(&mel.data, mel.n_frames, mel.n_mel, progress)
            };
            let embd = match &self.pool {
                Some(pool) => pool.install(run)?,
                None => run()?,
            };
            return Ok(embd.data);
        }
        let pixels = piece
            .data
            .downcast_ref::<PreprocessedImage>()
            .ok_or("prepared media was not made by this encoder")?;
        let run = || self.model.encode_image_with_progress(pixels, progress);
        let embd = match &self.pool {
            Some(pool) => pool.install(run)?,
            None => run()?,
        };
        Ok(embd.data)
    }

    /// Images go through the tower together (see `clip::Encoder::encode_batch`); audio
    /// windows one by one.
    fn encode_batch(
        &self,
        pieces: &[&PreparedMedia],
        progress: EncodeProgress<'_>,
    ) -> Result<Vec<Vec<f32>>, EncoderError> {
        let images: Option<Vec<&PreprocessedImage>> = pieces
            .iter()
            .map(|p| p.data.downcast_ref::<PreprocessedImage>())
            .collect();
        let Some(images) = images.filter(|i| i.len() > 1) else {
            return pieces
                .iter()
                .map(|p| self.encode_with_progress(p, progress))
                .collect();
        };
        let run = || self.model.encode_images_with_progress(&images, progress);
        let out = match &self.pool {
            Some(pool) => pool.install(run)?,
            None => run()?,
        };
        Ok(out.into_iter().map(|e| e.data).collect())
    }

    fn flops(&self, piece: &PreparedMedia) -> Option<u64> {
        if let Some(mel) = piece.data.downcast_ref::<MelWindow>() {
            return Some(
                self.model
                    .encode_flops(mel.n_frames, mel.n_mel, piece.n_tokens),
            );
        }
        let pixels = piece.data.downcast_ref::<PreprocessedImage>()?;
        Some(self.model.encode_flops(
            pixels.width as usize,
            pixels.height as usize,
            piece.n_tokens,
        ))
    }
}
