//! Idefics3 / SmolVLM (`idefics3`): the image is resized (Lanczos) so its longest edge is
//! `preproc_image_size`, then up to whole `image_size` tiles; each tile and a downscaled
//! overview go through a SigLIP ViT (learned position embeddings, layer norms, GELU FFN,
//! post-norm), a pixel shuffle that folds each `scale x scale` block of tokens into one, and a
//! bias-free linear projection. Every tile is its own media chunk, framed by
//! `<fake_token_around_image><row_r_col_c>`; the overview comes last after `<global-img>`.

use tensor::exec::Exec;

use crate::ClipError;
use crate::bitmap::Bitmap;
use crate::hparams::EncoderHparams;
use crate::models::{
    Embeddings, EncodeInput, Encoder, TowerOn, encode_alone, encode_batched_on, on_backend,
};
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
    tower: Tower,
    head: Head<Vec<f32>, Vec<f32>>,
    /// The same weights on the GPU, once offloaded: the whole encode runs there.
    #[cfg(feature = "gpu")]
    gpu_head: Option<Head<tensor::Tensor, tensor::Tensor>>,
}

/// Everything around the tower, on one backend (`V` its vectors, `A` its activations).
struct Head<V, A> {
    /// The patch matrix `[d, 3·p²]`.
    patch_w: tensor::Tensor,
    patch_b: Option<V>,
    /// `[n_patches, n_embd]` for one `image_size` tile.
    pos_embd: A,
    n_pos: usize,
    pre_ln: Option<Norm<V>>,
    post_ln: Option<Norm<V>>,
    /// `mm.model.fc`: `n_embd · scale²` -> text width, no bias.
    fc: Linear<V>,
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
        tower: Tower::new(blocks),
        head: Head {
            patch_w: vit::patch_matrix(&wl.tensor_shaped("v.patch_embd.weight", &[d, 3, p, p])?)?,
            patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
            pos_embd: wl
                .tensor_shaped("v.position_embd.weight", &[side * side, d])?
                .to_f32_vec()?,
            n_pos: side * side,
            pre_ln: layer_norm("v.pre_ln")?,
            post_ln: layer_norm("v.post_ln")?,
            fc: Linear::load_to_any_width(wl, "mm.model.fc", d * scale * scale)?,
        },
        #[cfg(feature = "gpu")]
        gpu_head: None,
    }))
}

/// Pixel shuffle as a row order: each merged token of a `[side², d]` raster grid is its
/// `s x s` block's tokens concatenated row by row (`ky`, then `kx`), so gathering the token
/// rows in this order gives `[(side/s)², d·s²]`.
fn pixel_shuffle_order(side: usize, s: usize) -> Vec<usize> {
    let g = side / s;
    let mut order = Vec::with_capacity(side * side);
    for y2 in 0..g {
        for x2 in 0..g {
            for ky in 0..s {
                for kx in 0..s {
                    order.push((y2 * s + ky) * side + x2 * s + kx);
                }
            }
        }
    }
    order
}

impl Encoder for Idefics3 {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        let h = &self.head;
        let head = Head {
            patch_w: exec.weight(&h.patch_w)?,
            patch_b: vit::opt_vector_to_gpu(&h.patch_b, exec)?,
            pos_embd: exec.upload(&h.pos_embd)?,
            n_pos: h.n_pos,
            pre_ln: Norm::opt_to_gpu(&h.pre_ln, exec)?,
            post_ln: Norm::opt_to_gpu(&h.post_ln, exec)?,
            fc: h.fc.to_gpu(exec)?,
        };
        self.tower.offload(exec)?;
        self.gpu_head = Some(head);
        Ok(())
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.head.fc.n_out()
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
        on_backend!(self, |tower, head| self
            .encode_on(tower, head, inputs, progress))
    }
}

impl Idefics3 {
    /// The whole encode on one backend: stem, tower and projector; the embeddings are each
    /// input's one read-back.
    fn encode_on<E: Exec>(
        &self,
        tower: &TowerOn<'_, E>,
        head: &Head<E::Vector, E::Act>,
        inputs: &[EncodeInput<'_>],
        progress: Progress<'_>,
    ) -> Result<Vec<Embeddings>, ClipError> {
        let e = tower.e;
        let stem = |i: &EncodeInput<'_>| self.stem(e, head, i.data, i.width, i.height);
        let tail = |x: &E::Act, i: &EncodeInput<'_>| self.tail(e, head, x, i.width / self.patch);
        encode_batched_on(
            tower,
            inputs,
            self.n_embd,
            self.n_head,
            &stem,
            &tail,
            progress,
        )
    }

    /// Patch embedding, positions and the optional pre-norm: `[n, n_embd]` tokens.
    fn stem<E: Exec>(
        &self,
        e: &E,
        head: &Head<E::Vector, E::Act>,
        pixels: &[f32],
        width: usize,
        height: usize,
    ) -> Result<(E::Act, usize), ClipError> {
        vit::check_pixels(pixels, width, height, self.patch * self.scale)?;
        let d = self.n_embd;
        let side = width / self.patch;
        let n = side * side;
        if width != height || n != head.n_pos {
            return Err(ClipError::BadImage(format!(
                "idefics3 takes square tiles of {} patches, got {width}x{height}",
                head.n_pos
            )));
        }
        let patch_w = (&head.patch_w, head.patch_b.as_ref());
        let mut x = vit::patch_embed_on(e, pixels, width, height, patch_w, self.patch)?;
        e.add(&mut x, &head.pos_embd)?;
        Ok((Norm::opt_apply_on(head.pre_ln.as_ref(), e, x, d)?, n))
    }

    /// Post-norm, pixel shuffle and projection of the tower's output for a `side x side`
    /// patch grid.
    fn tail<E: Exec>(
        &self,
        e: &E,
        head: &Head<E::Vector, E::Act>,
        x: &E::Act,
        side: usize,
    ) -> Result<Embeddings, ClipError> {
        let d = self.n_embd;
        let normed_x;
        let x = match &head.post_ln {
            Some(ln) => {
                let mut out = e.alloc(side * side * d)?;
                ln.forward_on(e, x, d, &mut out)?;
                normed_x = out;
                &normed_x
            }
            None => x,
        };
        let g = side / self.scale;
        let merged = e.gather_rows(x, d, &pixel_shuffle_order(side, self.scale))?;
        let data = head.fc.forward_on(e, &merged, g * g)?;
        Ok(Embeddings {
            n_tokens: g * g,
            // Not an M-RoPE model: llama.cpp reports a tile's tokens as one row.
            nx: g * g,
            ny: 1,
            data: e.download(data)?,
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
        assert_eq!(
            pixel_shuffle_order(4, 2),
            [0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15]
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
