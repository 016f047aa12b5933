//! Pixtral (`pixtral`), also the vision tower of Mistral Small 3.1 / Mistral 3: patch embedding
//! without position table, an RMS-norm ViT with a gated SiLU FFN and an axial 2-D rope, an
//! optional RMS input norm + 2x2 patch merger (Mistral 3), the two-layer GELU projector, and one
//! `[IMG_BREAK]` embedding after every row of tokens but the last.

use tensor::cpu;

use crate::ClipError;
use crate::bitmap::Bitmap;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::{Embeddings, Encoder};
use crate::preprocess::{
    PreprocessError, PreprocessParams, PreprocessedImage, TokenGrid, dynamic_resolution,
};
use crate::projector::{Defaults, Framing, Input, Projector, TokenLimits};
use crate::tower::{Progress, Tower};
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
struct PatchMerger {
    input_norm: Norm,
    proj: Linear,
    merge: usize,
}

pub struct Pixtral {
    patch: usize,
    n_embd: usize,
    n_head: usize,
    patch_w: tensor::Tensor,
    patch_b: Option<Vec<f32>>,
    pre_ln: Option<Norm>,
    tower: Tower,
    post_ln: Option<Norm>,
    merger: Option<PatchMerger>,
    projector: Ffn,
    img_break: Vec<f32>,
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
        patch_w: wl.tensor_shaped("v.patch_embd.weight", &[d, 3, p, p])?,
        patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
        pre_ln: rms("v.pre_ln")?,
        tower: Tower::new(blocks),
        post_ln: rms("v.post_ln")?,
        merger,
        projector,
        img_break: wl.vector("v.token_embd.img_break", text)?,
    }))
}

impl PatchMerger {
    /// `[py·px, d]` raster tokens -> `[(py/m)·(px/m), d]` merged tokens in raster order.
    fn forward(&self, x: &[f32], px: usize, py: usize, d: usize) -> Result<Vec<f32>, ClipError> {
        let m = self.merge;
        let x = self.input_norm.forward(x);
        let (mx, my) = (px / m, py / m);
        let wide = d * m * m;
        let mut unfolded = vec![0f32; mx * my * wide];
        for ty in 0..my {
            for tx in 0..mx {
                let dst = &mut unfolded[(ty * mx + tx) * wide..][..wide];
                for ky in 0..m {
                    for kx in 0..m {
                        let src = &x[((ty * m + ky) * px + tx * m + kx) * d..][..d];
                        for (c, &v) in src.iter().enumerate() {
                            dst[c * m * m + ky * m + kx] = v;
                        }
                    }
                }
            }
        }
        self.proj.forward(&unfolded, mx * my)
    }
}

impl Encoder for Pixtral {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        self.tower.offload(exec)
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.img_break.len()
    }

    fn encode(
        &self,
        pixels: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        let merge = self.merger.as_ref().map_or(1, |m| m.merge);
        vit::check_pixels(pixels, width, height, self.patch * merge)?;
        let d = self.n_embd;
        let (px, py) = (width / self.patch, height / self.patch);
        let n = px * py;
        let mut x = vit::patch_embed(pixels, width, height, &self.patch_w, self.patch)?;
        if let Some(b) = &self.patch_b {
            cpu::add_rows(&mut x, b);
        }
        if let Some(ln) = &self.pre_ln {
            x = ln.forward(&x);
        }
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
        self.tower.run_all(&mut x, n, &setup, progress)?;
        if let Some(ln) = &self.post_ln {
            x = ln.forward(&x);
        }
        let (gx, gy) = (px / merge, py / merge);
        if let Some(merger) = &self.merger {
            x = merger.forward(&x, px, py, d)?;
        }
        let tokens = self.projector.forward(&x, gx * gy)?;
        let width_out = self.n_embd_out();
        let n_tokens = gx * gy + gy - 1;
        let mut data = Vec::with_capacity(n_tokens * width_out);
        for (row, chunk) in tokens.chunks_exact(gx * width_out).enumerate() {
            data.extend_from_slice(chunk);
            if row + 1 < gy {
                data.extend_from_slice(&self.img_break);
            }
        }
        Ok(Embeddings {
            n_tokens,
            nx: n_tokens,
            ny: 1,
            data,
        })
    }
}
