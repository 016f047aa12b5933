//! Pixtral (`pixtral`), also the vision tower of Mistral Small 3.1 / Mistral 3: patch embedding
//! without position table, an RMS-norm ViT with a gated SiLU FFN and an axial 2-D rope, an
//! optional RMS input norm + 2x2 patch merger (Mistral 3), the two-layer GELU projector, and one
//! `[IMG_BREAK]` embedding after every row of tokens but the last.

use tensor::exec::Exec;

use crate::ClipError;
use crate::bitmap::Bitmap;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::{Embeddings, Encoder, TowerOn, on_backend};
use crate::preprocess::{
    PreprocessError, PreprocessParams, PreprocessedImage, TokenGrid, dynamic_resolution,
};
use crate::projector::{Defaults, Framing, Input, Projector, TokenLimits};
use crate::tower::{Progress, Tower, run_blocks};
use crate::vit::{self, AttnSetup, Block, Ffn, Linear, Norm, NormKind, VisionRope, WeightLoader};

pub const PROJECTOR: Projector = Projector {
    name: "pixtral",
    input: Input::Image(preprocess),
    // `[IMG_BREAK]` rows are part of the embeddings; `[IMG_END]` closes the image as text.
    framing: Framing::wrap("", "[IMG_END]"),
    non_causal: false,
    // The original Pixtral has no merger; Mistral 3 files set spatial_merge_size = 2.
    defaults: Defaults {
        merge: 1,
        token_limits: Some(TokenLimits { min: 8, max: 1024 }),
    },
    build,
};

/// Rope base of the vision tower (llama.cpp and HF fix it at 1e4).
const ROPE_BASE: f32 = 10000.0;

/// Dynamic resolution on the `patch · merge` grid; the tokens are the merged grid plus one
/// break per row but the last, reported as one row as llama.cpp does.
fn preprocess(
    image: &Bitmap,
    params: &PreprocessParams,
) -> Result<PreprocessedImage, PreprocessError> {
    let mut out = dynamic_resolution(image, params)?;
    let TokenGrid { nx, ny } = out.token_grid;
    out.token_grid = TokenGrid {
        nx: nx * ny + ny - 1,
        ny: 1,
    };
    Ok(out)
}

/// Mistral 3's merger: RMS input norm, then each `merge x merge` block of tokens unfolded
/// (channel-major, as `torch.nn.functional.unfold`) and projected back to the tower width.
struct PatchMerger<V> {
    input_norm: Norm<V>,
    proj: Linear<V>,
    merge: usize,
}

pub struct Pixtral {
    patch: usize,
    n_embd: usize,
    n_head: usize,
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
    pre_ln: Option<Norm<V>>,
    post_ln: Option<Norm<V>>,
    merger: Option<PatchMerger<V>>,
    projector: Ffn<V>,
    /// The `[IMG_BREAK]` embedding, one row.
    img_break: A,
    n_embd_out: usize,
}

pub fn build(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let (d, p) = (hp.n_embd, hp.patch_size);
    let rms = |name: &str| Norm::opt_load(wl, name, d, NormKind::Rms, hp.eps);
    let blocks = (0..hp.n_layer)
        .map(|il| Block::load(wl, il, d, NormKind::Rms, hp.eps, hp.ffn_act))
        .collect::<Result<Vec<_>, _>>()?;
    let merger = if wl.has("mm.patch_merger.weight") {
        let merge = hp.n_merge.max(1);
        Some(PatchMerger {
            input_norm: Norm::load(wl, "mm.input_norm", d, NormKind::Rms, hp.eps)?,
            proj: Linear::load(wl, "mm.patch_merger", d * merge * merge, d)?,
            merge,
        })
    } else {
        None
    };
    let up = Linear::load_to_any_width(wl, "mm.1", d)?;
    let text = up.n_out();
    let projector = Ffn {
        up,
        gate: None,
        down: Linear::load(wl, "mm.2", text, text)?,
        act: FfnAct::Gelu,
    };
    Ok(Box::new(Pixtral {
        patch: p,
        n_embd: d,
        n_head: hp.n_head,
        tower: Tower::new(blocks),
        head: Head {
            patch_w: vit::patch_matrix(&wl.tensor_shaped("v.patch_embd.weight", &[d, 3, p, p])?)?,
            patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
            pre_ln: rms("v.pre_ln")?,
            post_ln: rms("v.post_ln")?,
            merger,
            projector,
            img_break: wl.vector("v.token_embd.img_break", text)?,
            n_embd_out: text,
        },
        #[cfg(feature = "gpu")]
        gpu_head: None,
    }))
}

impl<V> PatchMerger<V> {
    /// `[py·px, d]` raster tokens -> `[(py/m)·(px/m), d]` merged tokens in raster order.
    fn forward_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &E::Act,
        px: usize,
        py: usize,
        d: usize,
    ) -> Result<E::Act, ClipError> {
        let m = self.merge;
        let mut normed = e.alloc(px * py * d)?;
        self.input_norm.forward_on(e, x, d, &mut normed)?;
        let unfolded = e.unfold_grid(&normed, [py, px, d], m)?;
        drop(normed);
        self.proj.forward_on(e, &unfolded, (px / m) * (py / m))
    }
}

impl Encoder for Pixtral {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        let h = &self.head;
        let merger = match &h.merger {
            Some(m) => Some(PatchMerger {
                input_norm: m.input_norm.to_gpu(exec)?,
                proj: m.proj.to_gpu(exec)?,
                merge: m.merge,
            }),
            None => None,
        };
        let head = Head {
            patch_w: exec.weight(&h.patch_w)?,
            patch_b: vit::opt_vector_to_gpu(&h.patch_b, exec)?,
            pre_ln: Norm::opt_to_gpu(&h.pre_ln, exec)?,
            post_ln: Norm::opt_to_gpu(&h.post_ln, exec)?,
            merger,
            projector: h.projector.to_gpu(exec)?,
            img_break: exec.upload(&h.img_break)?,
            n_embd_out: h.n_embd_out,
        };
        self.tower.offload(exec)?;
        self.gpu_head = Some(head);
        Ok(())
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.head.n_embd_out
    }

    fn encode(
        &self,
        pixels: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        on_backend!(self, |tower, head| self
            .encode_on(tower, head, pixels, width, height, progress))
    }
}

impl Pixtral {
    /// The whole encode on one backend; the embeddings are its one read-back.
    fn encode_on<E: Exec>(
        &self,
        tower: &TowerOn<'_, E>,
        head: &Head<E::Vector, E::Act>,
        pixels: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        let e = tower.e;
        let merge = head.merger.as_ref().map_or(1, |m| m.merge);
        vit::check_pixels(pixels, width, height, self.patch * merge)?;
        let d = self.n_embd;
        let (px, py) = (width / self.patch, height / self.patch);
        let n = px * py;
        let patch_w = (&head.patch_w, head.patch_b.as_ref());
        let x = vit::patch_embed_on(e, pixels, width, height, patch_w, self.patch)?;
        let mut x = Norm::opt_apply_on(head.pre_ln.as_ref(), e, x, d)?;
        let rows: Vec<i32> = (0..n).map(|i| (i / px) as i32).collect();
        let cols: Vec<i32> = (0..n).map(|i| (i % px) as i32).collect();
        let setup = AttnSetup {
            n_head: self.n_head,
            rope: Some(VisionRope::Axial {
                base: ROPE_BASE,
                rows: &rows,
                cols: &cols,
            }),
            windows: None,
        };
        run_blocks(
            e,
            tower.blocks,
            &mut x,
            n,
            0..tower.blocks.len(),
            &|_| setup,
            progress,
        )?;
        x = Norm::opt_apply_on(head.post_ln.as_ref(), e, x, d)?;
        let (gx, gy) = (px / merge, py / merge);
        if let Some(merger) = &head.merger {
            x = merger.forward_on(e, &x, px, py, d)?;
        }
        let tokens = head.projector.forward_on(e, &x, gx * gy)?;
        drop(x);
        // One [IMG_BREAK] after every row of tokens but the last: the break row goes after
        // the tokens, and one gather lays the rows out.
        let width_out = head.n_embd_out;
        let mut stacked = e.alloc((gx * gy + 1) * width_out)?;
        e.copy_rows(&mut stacked, width_out, 0, &tokens)?;
        e.copy_rows(&mut stacked, width_out, gx * gy, &head.img_break)?;
        let mut order = Vec::with_capacity(gx * gy + gy - 1);
        for row in 0..gy {
            order.extend(row * gx..(row + 1) * gx);
            if row + 1 < gy {
                order.push(gx * gy);
            }
        }
        let n_tokens = order.len();
        Ok(Embeddings {
            n_tokens,
            nx: n_tokens,
            ny: 1,
            data: e.download(e.gather_rows(&stacked, width_out, &order)?)?,
        })
    }
}
