//! Image preprocessing as llama.cpp's mtmd does it: resize (+ pad) in 8 bits, then normalize into planar
//! f32 `[3, H, W]`, the exact `inp_raw` tensor its vision graphs consume.

pub mod resize;
pub mod size;

use crate::bitmap::Bitmap;
pub use resize::ResizeFilter;

#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    #[error("invalid preprocessing parameter {name} = {value}: {reason}")]
    BadParam {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "image of {width}x{height} resizes to {target_w}x{target_h}, which is not a positive multiple of {align}"
    )]
    BadTarget {
        width: u32,
        height: u32,
        target_w: u32,
        target_h: u32,
        align: u32,
    },
}

/// Preprocessing constants, filled from the mmproj hparams (`clip.vision.*`) by the encoder loader.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessParams {
    /// `clip.vision.image_size`: the square side for fixed-size models (Gemma 3).
    pub image_size: u32,
    /// `clip.vision.patch_size`.
    pub patch_size: u32,
    /// Patches merged (or pooled) per side: `clip.vision.spatial_merge_size`, else the projector's default.
    pub merge: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Bounds on merged output tokens (llama.cpp's image_min/max_tokens; Qwen-VL defaults 8 and 4096).
    pub min_tokens: u32,
    pub max_tokens: u32,
    /// `clip.vision.preproc_image_size`: the longest edge a tiling projector (Idefics3) resizes
    /// to before cutting tiles; 0 when the file does not say.
    pub longest_edge: u32,
}

impl PreprocessParams {
    /// Pixel side covered by one merged output token.
    pub fn align(&self) -> u32 {
        self.patch_size * self.merge.max(1)
    }

    /// Area budget in pixels: tokens times the area of one token.
    pub fn pixel_budget(&self) -> (u64, u64) {
        let token_area = u64::from(self.align()) * u64::from(self.align());
        (
            u64::from(self.min_tokens) * token_area,
            u64::from(self.max_tokens) * token_area,
        )
    }

    pub(crate) fn validate(&self) -> Result<(), PreprocessError> {
        let bad = |name, value: String, reason| {
            Err(PreprocessError::BadParam {
                name,
                value,
                reason,
            })
        };
        if self.patch_size == 0 || self.patch_size > 1024 {
            return bad(
                "patch_size",
                self.patch_size.to_string(),
                "must be in 1..=1024",
            );
        }
        if self.merge > 16 {
            return bad("merge", self.merge.to_string(), "must be at most 16");
        }
        if self.image_size > crate::bitmap::MAX_SIDE {
            return bad("image_size", self.image_size.to_string(), "too large");
        }
        if self.longest_edge > crate::bitmap::MAX_SIDE {
            return bad("longest_edge", self.longest_edge.to_string(), "too large");
        }
        if self.min_tokens > self.max_tokens {
            return bad(
                "min_tokens",
                self.min_tokens.to_string(),
                "exceeds max_tokens",
            );
        }
        if self.max_tokens > 1 << 20 {
            return bad(
                "max_tokens",
                self.max_tokens.to_string(),
                "must be at most 2^20",
            );
        }
        for c in 0..3 {
            if !self.std[c].is_finite() || self.std[c] == 0.0 || !self.mean[c].is_finite() {
                return bad(
                    "std/mean",
                    format!("{:?}/{:?}", self.std, self.mean),
                    "must be finite, std non-zero",
                );
            }
        }
        Ok(())
    }
}

/// Merged-token grid of a dynamic-resolution image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenGrid {
    pub nx: u32,
    pub ny: u32,
}

/// Normalized planar pixels: `data[c * height * width + y * width + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessedImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<f32>,
    /// The encoder's output token grid (a fixed-size projector reports its tokens as one row,
    /// as llama.cpp does).
    pub token_grid: TokenGrid,
}

/// Where one preprocessed piece of an image goes in the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The whole image in one piece (most projectors).
    Whole,
    /// One tile of a tiled image, at `row`, `col` counted from 0 (row-major).
    Tile { row: u32, col: u32 },
    /// The downscaled view of a tiled image that follows its tiles.
    Overview,
}

/// One piece of a preprocessed image and its place in the image's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePiece {
    pub place: Placement,
    pub image: PreprocessedImage,
}

/// The `width` x `height` region of `image` whose top-left corner is (`x`, `y`); the region must
/// lie inside the image.
pub fn crop(image: &Bitmap, x: u32, y: u32, width: u32, height: u32) -> Bitmap {
    assert!(x + width <= image.width && y + height <= image.height);
    let row = 3 * width as usize;
    let mut rgb = Vec::with_capacity(row * height as usize);
    for yy in y..y + height {
        let start = 3 * (yy as usize * image.width as usize + x as usize);
        rgb.extend_from_slice(&image.rgb[start..start + row]);
    }
    Bitmap::derived(width, height, rgb)
}

/// Fixed-size square input (Gemma 3's SigLIP): fit into the `image_size` square keeping the aspect
/// ratio with Pillow-style bilinear, black padding centred (llama.cpp's default PAD_CEIL; no pan and
/// scan), then normalize. The patch grid is pooled `merge`x`merge`: `(image_size / patch / merge)²`
/// tokens, laid out as one row.
pub fn fixed_square(
    image: &Bitmap,
    params: &PreprocessParams,
) -> Result<PreprocessedImage, PreprocessError> {
    params.validate()?;
    if params.image_size == 0 {
        return Err(PreprocessError::BadParam {
            name: "image_size",
            value: "0".into(),
            reason: "must be positive",
        });
    }
    let side = params.image_size;
    let align = params.align();
    if !side.is_multiple_of(align) {
        return Err(PreprocessError::BadParam {
            name: "image_size",
            value: side.to_string(),
            reason: "must be a multiple of patch_size * merge",
        });
    }
    let resized = resize::resize_fit_padded(image, side, side, ResizeFilter::Bilinear, [0, 0, 0]);
    let per_side = side / align;
    Ok(PreprocessedImage {
        width: side,
        height: side,
        data: normalize_planar(&resized, &params.mean, &params.std),
        token_grid: TokenGrid {
            nx: per_side * per_side,
            ny: 1,
        },
    })
}

/// Dynamic resolution (Qwen2-VL / Qwen2.5-VL / Qwen3-VL): target size on the `patch * merge` grid
/// within the token budget, aspect-preserving Pillow-style bicubic into it, black padding centred,
/// then normalize.
pub fn dynamic_resolution(
    image: &Bitmap,
    params: &PreprocessParams,
) -> Result<PreprocessedImage, PreprocessError> {
    params.validate()?;
    let align = params.align();
    let (min_pixels, max_pixels) = params.pixel_budget();
    let (target_w, target_h) =
        size::size_within_pixel_budget(image.width, image.height, align, min_pixels, max_pixels);
    let bad_target = target_w == 0
        || target_h == 0
        || target_w % align != 0
        || target_h % align != 0
        || target_w > crate::bitmap::MAX_SIDE
        || target_h > crate::bitmap::MAX_SIDE;
    if bad_target {
        return Err(PreprocessError::BadTarget {
            width: image.width,
            height: image.height,
            target_w,
            target_h,
            align,
        });
    }
    let resized =
        resize::resize_fit_padded(image, target_w, target_h, ResizeFilter::Bicubic, [0, 0, 0]);
    Ok(PreprocessedImage {
        width: target_w,
        height: target_h,
        data: normalize_planar(&resized, &params.mean, &params.std),
        token_grid: TokenGrid {
            nx: target_w / align,
            ny: target_h / align,
        },
    })
}

/// `(v / 255 - mean) / std` in f32, in that order (as the reference), interleaved -> planar.
pub fn normalize_planar(image: &Bitmap, mean: &[f32; 3], std: &[f32; 3]) -> Vec<f32> {
    let plane = image.width as usize * image.height as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in image.rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (f32::from(px[c]) / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen2_params() -> PreprocessParams {
        PreprocessParams {
            image_size: 560,
            patch_size: 14,
            merge: 2,
            mean: [0.5; 3],
            std: [0.5; 3],
            min_tokens: 8,
            max_tokens: 4096,
            longest_edge: 0,
        }
    }

    #[test]
    fn crop_copies_the_region() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|v| v as u8).collect();
        let img = Bitmap::from_rgb(4, 3, rgb).unwrap();
        let out = crop(&img, 1, 1, 2, 2);
        assert_eq!((out.width, out.height), (2, 2));
        assert_eq!(out.pixel(0, 0), img.pixel(1, 1));
        assert_eq!(out.pixel(1, 1), img.pixel(2, 2));
    }

    #[test]
    fn tiny_image_gives_three_by_three_tokens() {
        let tiny = Bitmap::from_rgb(2, 2, vec![255; 12]).unwrap();
        let out = dynamic_resolution(&tiny, &qwen2_params()).unwrap();
        assert_eq!((out.width, out.height), (84, 84));
        assert_eq!(out.token_grid, TokenGrid { nx: 3, ny: 3 });
        assert_eq!(out.data.len(), 3 * 84 * 84);
        // Upscaling 2 -> 84 fills the whole canvas: white everywhere, normalized to 1.
        assert!(out.data.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn gemma3_is_square() {
        let params = PreprocessParams {
            image_size: 112,
            ..qwen2_params()
        };
        let img = Bitmap::from_rgb(3, 2, vec![0; 18]).unwrap();
        let out = fixed_square(&img, &params).unwrap();
        // 112 / 14 = 8 patches per side, pooled 2x2: 16 tokens in one row.
        assert_eq!(
            (out.width, out.height, out.token_grid),
            (112, 112, TokenGrid { nx: 16, ny: 1 })
        );
        assert!(out.data.iter().all(|&v| v == -1.0));
    }

    #[test]
    fn bad_params_are_errors() {
        let img = Bitmap::from_rgb(1, 1, vec![0; 3]).unwrap();
        let zero_patch = PreprocessParams {
            patch_size: 0,
            ..qwen2_params()
        };
        assert!(dynamic_resolution(&img, &zero_patch).is_err());
        let zero_std = PreprocessParams {
            std: [0.0; 3],
            ..qwen2_params()
        };
        assert!(dynamic_resolution(&img, &zero_std).is_err());
        let zero_size = PreprocessParams {
            image_size: 0,
            ..qwen2_params()
        };
        assert!(fixed_square(&img, &zero_size).is_err());
    }
}
