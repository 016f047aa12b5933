//! Idefics3 / SmolVLM (`idefics3`): the image is resized (Lanczos) so its longest edge is
//! `preproc_image_size`, then up to whole `image_size` tiles; each tile and a downscaled
//! overview go through a SigLIP ViT (learned position embeddings, layer norms, GELU FFN,
//! post-norm), a pixel shuffle that folds each `scale x scale` block of tokens into one, and a
//! bias-free linear projection. Every tile is its own media chunk, framed by
//! `<fake_token_around_image><row_r_col_c>`; the overview comes last after `<global-img>`.

use tensor::cpu;

use crate::ClipError;
use crate::bitmap::Bitmap;
use crate::hparams::EncoderHparams;
use crate::models::{Embeddings, EncodeInput, Encoder, encode_alone, encode_batched};
use crate::preprocess::{
    ImagePiece, Placement, PreprocessError, PreprocessParams, PreprocessedImage, ResizeFilter,
    TokenGrid, crop, normalize_planar, resize::resize,
};
use crate::projector::{Defaults, Framing, Input, Projector, TileFraming};
use crate::tower::{Progress, Tower};
use crate::vit::{self, Block, Linear, Norm, NormKind, WeightLoader};

pub const PROJECTOR: Projector = Projector {
    name: "idefics3",
    input: Input::TiledImage(preprocess),
    // The overview's frame; the tiles' frames are below. llama.cpp looks these up as single
    // tokens; each text here is one token of the SmolVLM vocabulary.
    framing: Framing {
        begin: "<fake_token_around_image><global-img>",
        end: "<fake_token_around_image>",
        tiles: Some(TileFraming {
            tile_begin,
            tile_end: "",
            row_end: "\n",
            before_overview: "\n\n",
        }),
    },
    non_causal: false,
    // HF's Idefics3 / SmolVLM default pixel-shuffle factor.
    defaults: Defaults {
        merge: 2,
        token_limits: None,
    },
    build,
};

fn tile_begin(row: usize, col: usize) -> String {
    format!("<fake_token_around_image><row_{row}_col_{col}>")
}

/// Size after the first resize: the longest edge becomes `longest`, the other keeps the aspect
/// ratio (truncated, as HF's `int()`), made even by rounding up.
fn longest_edge_size(width: u32, height: u32, longest: u32) -> (u32, u32) {
    let even_up = |v: u32| (v + (v & 1)).max(1);
    let aspect = f64::from(width) / f64::from(height);
    if width >= height {
        (longest, even_up((f64::from(longest) / aspect) as u32))
    } else {
        (even_up((f64::from(longest) * aspect) as u32), longest)
    }
}

fn bad_param(name: &'static str, value: u32, reason: &'static str) -> PreprocessError {
    PreprocessError::BadParam {
        name,
        value: value.to_string(),
        reason,
    }
}

/// Tiles then the overview. The image is resized (Pillow Lanczos) to `longest_edge` on its
/// long side keeping the aspect ratio, then (Lanczos again, without keeping it) up to whole
/// `image_size` tiles per side; the tiles are cut row-major from that, and the overview is it
/// resized to one tile.
fn preprocess(
    image: &Bitmap,
    params: &PreprocessParams,
) -> Result<Vec<ImagePiece>, PreprocessError> {
    params.validate()?;
    let tile = params.image_size;
    let align = params.align();
    if tile == 0 || !tile.is_multiple_of(align) {
        return Err(bad_param(
            "image_size",
            tile,
            "must be a positive multiple of patch_size * scale_factor",
        ));
    }
    if params.longest_edge == 0 {
        return Err(bad_param(
            "longest_edge",
            0,
            "idefics3 needs clip.vision.preproc_image_size",
        ));
    }
    let (w1, h1) = longest_edge_size(image.width, image.height, params.longest_edge);
    let (rw, rh) = (w1.div_ceil(tile) * tile, h1.div_ceil(tile) * tile);
    if rw > crate::bitmap::MAX_SIDE || rh > crate::bitmap::MAX_SIDE {
        return Err(PreprocessError::BadTarget {
            width: image.width,
            height: image.height,
            target_w: rw,
            target_h: rh,
            align: tile,
        });
    }
    let resized = resize(image, w1, h1, ResizeFilter::Lanczos);
    let refined = resize(&resized, rw, rh, ResizeFilter::Lanczos);
    let per_side = tile / align;
    let piece = |place, bitmap: &Bitmap| ImagePiece {
        place,
        image: PreprocessedImage {
            width: tile,
            height: tile,
            data: normalize_planar(bitmap, &params.mean, &params.std),
            token_grid: TokenGrid {
                nx: per_side * per_side,
                ny: 1,
            },
        },
    };
    let (cols, rows) = (rw / tile, rh / tile);
    let mut pieces = Vec::with_capacity((cols * rows + 1) as usize);
    for row in 0..rows {
        for col in 0..cols {
            let cut = crop(&refined, col * tile, row * tile, tile, tile);
            pieces.push(piece(Placement::Tile { row, col }, &cut));
        }
    }
    let overview = resize(&refined, tile, tile, ResizeFilter::Lanczos);
    pieces.push(piece(Placement::Overview, &overview));
    Ok(pieces)
}

pub struct Idefics3 {
    patch: usize,
    n_embd: usize,
    n_head: usize,
    scale: usize,
    patch_w: tensor::Tensor,
    patch_b: Option<Vec<f32>>,
    /// `[n_patches, n_embd]` for one `image_size` tile.
    pos_embd: Vec<f32>,
    pre_ln: Option<Norm>,
    tower: Tower,
    post_ln: Option<Norm>,
    /// `mm.model.fc`: `n_embd · scale²` -> text width, no bias.
    fc: Linear,
}

pub fn build(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let (d, p) = (hp.n_embd, hp.patch_size);
    let side = hp.image_size / p;
    let scale = hp.n_merge;
    if scale == 0 || !side.is_multiple_of(scale) {
        return Err(ClipError::BadValue {
            key: "clip.vision.projector.scale_factor".into(),
            detail: format!("{scale} does not divide the {side}-patch tile"),
        });
    }
    let layer_norm = |name: &str| Norm::opt_load(wl, name, d, NormKind::Layer, hp.eps);
    let blocks = (0..hp.n_layer)
        .map(|il| Block::load(wl, il, d, NormKind::Layer, hp.eps, hp.ffn_act))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(Idefics3 {
        patch: p,
        n_embd: d,
        n_head: hp.n_head,
        scale,
        patch_w: wl.tensor_shaped("v.patch_embd.weight", &[d, 3, p, p])?,
        patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
        pos_embd: wl
            .tensor_shaped("v.position_embd.weight", &[side * side, d])?
            .to_f32_vec()?,
        pre_ln: layer_norm("v.pre_ln")?,
        tower: Tower::new(blocks),
        post_ln: layer_norm("v.post_ln")?,
        fc: Linear::load_to_any_width(wl, "mm.model.fc", d * scale * scale)?,
    }))
}

/// Pixel shuffle: `[side², d]` raster tokens -> `[(side/s)², d·s²]`, each merged token the
/// `s x s` block's tokens concatenated row by row (`ky`, then `kx`, then the channel).
fn pixel_shuffle(x: &[f32], side: usize, d: usize, s: usize) -> Vec<f32> {
    let g = side / s;
    let wide = d * s * s;
    let mut out = vec![0f32; g * g * wide];
    for y2 in 0..g {
        for x2 in 0..g {
            let dst = &mut out[(y2 * g + x2) * wide..][..wide];
            for ky in 0..s {
                for kx in 0..s {
                    let src = &x[((y2 * s + ky) * side + x2 * s + kx) * d..][..d];
                    dst[(ky * s + kx) * d..][..d].copy_from_slice(src);
                }
            }
        }
    }
    out
}

impl Encoder for Idefics3 {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        self.tower.offload(exec)
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.fc.n_out()
    }

    fn encode(
        &self,
        pixels: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        encode_alone(self, pixels, width, height, progress)
    }

    /// The tiles of an image (and the overview) go through the tower in one pass.
    fn encode_batch(
        &self,
        inputs: &[EncodeInput<'_>],
        progress: Progress<'_>,
    ) -> Result<Vec<Embeddings>, ClipError> {
        let stem = |i: &EncodeInput<'_>| self.stem(i.data, i.width, i.height);
        let tail = |x: &[f32], i: &EncodeInput<'_>| self.tail(x, i.width / self.patch);
        encode_batched(
            inputs,
            &self.tower,
            self.n_embd,
            self.n_head,
            &stem,
            &tail,
            progress,
        )
    }
}

impl Idefics3 {
    /// Patch embedding, positions and the optional pre-norm: `[n, n_embd]` tokens.
    fn stem(&self, pixels: &[f32], width: usize, height: usize) -> Result<Vec<f32>, ClipError> {
        vit::check_pixels(pixels, width, height, self.patch * self.scale)?;
        let d = self.n_embd;
        let side = width / self.patch;
        let n = side * side;
        if width != height || n * d != self.pos_embd.len() {
            return Err(ClipError::BadImage(format!(
                "idefics3 takes square tiles of {} patches, got {width}x{height}",
                self.pos_embd.len() / d
            )));
        }
        let mut x = vit::patch_embed(pixels, width, height, &self.patch_w, self.patch)?;
        if let Some(b) = &self.patch_b {
            cpu::add_rows(&mut x, b);
        }
        cpu::add(&mut x, &self.pos_embd);
        if let Some(ln) = &self.pre_ln {
            x = ln.forward(&x);
        }
        Ok(x)
    }

    /// Post-norm, pixel shuffle and projection of the tower's output for a `side x side`
    /// patch grid.
    fn tail(&self, x: &[f32], side: usize) -> Result<Embeddings, ClipError> {
        let normed_x;
        let x = match &self.post_ln {
            Some(ln) => {
                normed_x = ln.forward(x);
                &normed_x[..]
            }
            None => x,
        };
        let g = side / self.scale;
        let merged = pixel_shuffle(x, side, self.n_embd, self.scale);
        let data = self.fc.forward(&merged, g * g)?;
        Ok(Embeddings {
            n_tokens: g * g,
            // Not an M-RoPE model: llama.cpp reports a tile's tokens as one row.
            nx: g * g,
            ny: 1,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_resize_keeps_aspect_with_an_even_short_side() {
        assert_eq!(longest_edge_size(333, 241, 256), (256, 186));
        assert_eq!(longest_edge_size(300, 200, 256), (256, 170));
        assert_eq!(longest_edge_size(200, 300, 256), (170, 256));
        assert_eq!(longest_edge_size(256, 256, 256), (256, 256));
        // The short side truncates to 0 and is kept at one pixel, as HF's `min_len`.
        assert_eq!(longest_edge_size(4000, 1, 256), (256, 1));
    }

    #[test]
    fn pixel_shuffle_concatenates_each_block_row_by_row() {
        // 4x4 tokens of width 1 holding their raster index; 2x2 blocks.
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = pixel_shuffle(&x, 4, 1, 2);
        assert_eq!(
            out,
            [
                0., 1., 4., 5., 2., 3., 6., 7., 8., 9., 12., 13., 10., 11., 14., 15.
            ]
        );
    }

    #[test]
    fn tiles_then_overview() {
        let params = PreprocessParams {
            image_size: 64,
            patch_size: 8,
            merge: 2,
            mean: [0.5; 3],
            std: [0.5; 3],
            min_tokens: 0,
            max_tokens: 1 << 20,
            longest_edge: 256,
        };
        let img = Bitmap::from_rgb(333, 241, vec![7; 333 * 241 * 3]).unwrap();
        let pieces = preprocess(&img, &params).unwrap();
        // 256x186 -> 256x192: 4 columns, 3 rows, then the overview.
        assert_eq!(pieces.len(), 13);
        assert_eq!(pieces[4].place, Placement::Tile { row: 1, col: 0 });
        assert_eq!(pieces[12].place, Placement::Overview);
        for p in &pieces {
            assert_eq!((p.image.width, p.image.height), (64, 64));
            assert_eq!(p.image.token_grid, TokenGrid { nx: 16, ny: 1 });
        }
        let no_edge = PreprocessParams {
            longest_edge: 0,
            ..params
        };
        assert!(preprocess(&img, &no_edge).is_err());
    }
}
