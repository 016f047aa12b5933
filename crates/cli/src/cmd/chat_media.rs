//! Loading an mmproj into an `mtmd::Context` and images into bitmaps, for `chat` and `bench`.
//! (Stand-in until the shared `cmd/media.rs` helpers exist; then this file goes away.)

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result, anyhow};
use clip::ClipModel;
use clip::preprocess::{PreprocessParams, PreprocessedImage, Strategy};
use llm::Model;
use mtmd::{Bitmap, EncoderError, ImageEncoder, ImageFraming, PreparedImage};

/// Qwen-VL token budget per image (llama.cpp's defaults).
const QWEN_MIN_TOKENS: u32 = 8;
const QWEN_MAX_TOKENS: u32 = 4096;

/// The `clip` crate's vision tower behind the library's encoder seam.
struct ClipEncoder {
    clip: ClipModel,
    strategy: Strategy,
    params: PreprocessParams,
    framing: ImageFraming,
    /// Tokens of a fixed-size image (Gemma 3), all in one row.
    fixed_tokens: usize,
}

impl ImageEncoder for ClipEncoder {
    fn framing(&self) -> ImageFraming {
        self.framing.clone()
    }

    fn n_embd_out(&self) -> usize {
        self.clip.n_embd_out()
    }

    fn preprocess(&self, bitmap: &Bitmap) -> Result<PreparedImage, EncoderError> {
        let rgb = clip::bitmap::Bitmap::from_rgb(bitmap.nx(), bitmap.ny(), bitmap.data().to_vec())?;
        let pre = clip::preprocess::preprocess(&rgb, self.strategy, &self.params)?;
        let (nx, ny) = match pre.token_grid {
            Some(grid) => (grid.nx as usize, grid.ny as usize),
            None => (self.fixed_tokens, 1),
        };
        Ok(PreparedImage {
            nx,
            ny,
            n_tokens: nx * ny,
            data: Arc::new(pre),
        })
    }

    fn encode(&self, image: &PreparedImage) -> Result<Vec<f32>, EncoderError> {
        let pre = image
            .data
            .downcast_ref::<PreprocessedImage>()
            .ok_or("image was prepared by another encoder")?;
        let out = self
            .clip
            .encode(&pre.data, pre.width as usize, pre.height as usize)?;
        Ok(out.data)
    }
}

/// Pairs `model` with the vision encoder of the mmproj at `path`.
pub fn load_media_context(model: Arc<Model>, path: &Path) -> Result<mtmd::Context> {
    let clip = ClipModel::load(path).with_context(|| path.display().to_string())?;
    let projector = clip.projector_type().to_string();
    let unsupported = || anyhow!("{}: projector '{projector}' is not supported", path.display());
    let strategy = Strategy::for_projector(&projector).ok_or_else(unsupported)?;
    let framing = ImageFraming::for_projector(&projector).ok_or_else(unsupported)?;
    let hp = clip.hparams();
    let merge = match strategy {
        Strategy::DynamicResolution if hp.n_merge == 0 => 2,
        _ => hp.n_merge.max(1),
    };
    let side = hp.image_size / hp.patch_size.max(1) / merge;
    let to_u32 = |v: usize, what: &str| {
        u32::try_from(v).map_err(|_| anyhow!("{}: {what} {v} is too large", path.display()))
    };
    let params = PreprocessParams {
        image_size: to_u32(hp.image_size, "image_size")?,
        patch_size: to_u32(hp.patch_size, "patch_size")?,
        merge: to_u32(merge, "merge")?,
        mean: hp.image_mean,
        std: hp.image_std,
        min_tokens: QWEN_MIN_TOKENS,
        max_tokens: QWEN_MAX_TOKENS,
    };
    let encoder = ClipEncoder {
        clip,
        strategy,
        params,
        framing,
        fixed_tokens: side * side,
    };
    mtmd::Context::with_encoder(model, Box::new(encoder), mtmd::ContextParams::default())
        .with_context(|| path.display().to_string())
}

/// Reads and decodes an image file; its id is a hash of the pixels.
pub fn load_bitmap(path: &Path) -> Result<Bitmap> {
    let img = clip::bitmap::Bitmap::from_file(path)?;
    Ok(Bitmap::from_rgb(img.width, img.height, img.rgb)?)
}
