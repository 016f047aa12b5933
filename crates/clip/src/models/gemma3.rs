//! Gemma 3: SigLIP ViT (learned position embeddings, layer norms, GELU FFN) and the Gemma 3
//! projector (average pool to the token grid, soft-embedding RMS norm, input projection).

use tensor::Tensor;
use tensor::cpu;

use crate::ClipError;
use crate::hparams::EncoderHparams;
use crate::models::{Embeddings, EncodeInput, Encoder, encode_alone, encode_batched};
use crate::preprocess::fixed_square;
use crate::projector::{Defaults, Framing, Input, Projector};
use crate::tower::{Progress, Tower};
use crate::vit::{self, Block, Norm, NormKind, WeightLoader};

pub const PROJECTOR: Projector = Projector {
    name: "gemma3",
    input: Input::Image(fixed_square),
    framing: Framing::wrap("<start_of_image>", "<end_of_image>"),
    non_causal: true,
    // llama.cpp pools 4x4 for every Gemma 3 size; tiny test models set scale_factor.
    defaults: Defaults {
        merge: 4,
        token_limits: None,
    },
    build,
};

pub struct Gemma3 {
    patch: usize,
    n_embd: usize,
    n_head: usize,
    n_merge: usize,
    patch_w: Tensor,
    patch_b: Option<Vec<f32>>,
    /// `[n_patches, n_embd]`.
    pos_embd: Vec<f32>,
    tower: Tower,
    post_ln: Option<Norm>,
    soft_emb_norm: Vec<f32>,
    eps: f32,
    /// `[projection_dim, n_embd]` f32 (the file stores it transposed).
    input_proj: Tensor,
}

pub fn build(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let (d, p) = (hp.n_embd, hp.patch_size);
    let side = hp.image_size / p;
    let patch_w = wl.tensor_shaped("v.patch_embd.weight", &[d, 3, p, p])?;
    let pos_embd = wl
        .tensor_shaped("v.position_embd.weight", &[side * side, d])?
        .to_f32_vec()?;
    let blocks = (0..hp.n_layer)
        .map(|il| Block::load(wl, il, d, NormKind::Layer, hp.eps, hp.ffn_act))
        .collect::<Result<Vec<_>, _>>()?;
    // Stored `[n_embd, text width]`; the text width is what the tensor says, whatever the
    // metadata's projection_dim claims.
    let proj_name = "mm.input_projection.weight";
    let proj = wl.tensor(proj_name)?;
    let text_dim = match proj.shape() {
        &[rows, cols] if rows == d && cols > 0 => cols,
        other => {
            return Err(ClipError::TensorShape {
                name: proj_name.into(),
                actual: other.to_vec(),
                expected: vec![d, hp.projection_dim],
            });
        }
    };
    let stored = proj.to_f32_vec()?;
    let mut transposed = vec![0f32; stored.len()];
    cpu::transpose(&stored, d, text_dim, &mut transposed);
    let n_merge = hp.n_merge;
    if n_merge == 0 || !side.is_multiple_of(n_merge) {
        return Err(ClipError::BadValue {
            key: "clip.vision.projector.scale_factor".into(),
            detail: format!("{n_merge} does not divide the {side}-patch grid"),
        });
    }
    Ok(Box::new(Gemma3 {
        patch: p,
        n_embd: d,
        n_head: hp.n_head,
        n_merge,
        patch_w,
        patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
        pos_embd,
        tower: Tower::new(blocks),
        post_ln: Norm::opt_load(wl, "v.post_ln", d, NormKind::Layer, hp.eps)?,
        soft_emb_norm: wl.vector("mm.soft_emb_norm.weight", d)?,
        eps: hp.eps,
        input_proj: Tensor::from_f32(&[text_dim, d], &transposed)?,
    }))
}

impl Encoder for Gemma3 {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        self.tower.offload(exec)
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.input_proj.shape()[0]
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

impl Gemma3 {
    /// Patch embedding and positions: `[n, n_embd]` tokens.
    fn stem(&self, pixels: &[f32], width: usize, height: usize) -> Result<Vec<f32>, ClipError> {
        vit::check_pixels(pixels, width, height, self.patch)?;
        let side = width / self.patch;
        let n = side * side;
        if width != height || n * self.n_embd != self.pos_embd.len() {
            return Err(ClipError::BadImage(format!(
                "gemma3 needs the square image_size input ({} patches), got {width}x{height}",
                self.pos_embd.len() / self.n_embd
            )));
        }
        let mut x = vit::patch_embed(pixels, width, height, &self.patch_w, self.patch)?;
        if let Some(b) = &self.patch_b {
            cpu::add_rows(&mut x, b);
        }
        cpu::add(&mut x, &self.pos_embd);
        Ok(x)
    }

    /// Post-norm, 2-D average pooling, soft-embedding norm and the input projection of the
    /// tower's output for a `side x side` patch grid.
    fn tail(&self, x: &[f32], side: usize) -> Result<Embeddings, ClipError> {
        let d = self.n_embd;
        let n = side * side;
        let normed_x;
        let x = match &self.post_ln {
            Some(ln) => {
                normed_x = ln.forward(x);
                &normed_x[..]
            }
            None => x,
        };
        // Pool the patch grid channel by channel: [n, d] -> [d, side, side] -> [d, g, g].
        let g = side / self.n_merge;
        let mut chw = vec![0f32; n * d];
        cpu::transpose(x, n, d, &mut chw);
        let mut pooled = vec![0f32; d * g * g];
        cpu::avg_pool2d(
            &chw,
            [d, side, side],
            self.n_merge,
            self.n_merge,
            &mut pooled,
        );
        let mut tokens = vec![0f32; g * g * d];
        cpu::transpose(&pooled, d, g * g, &mut tokens);
        let mut normed = vec![0f32; tokens.len()];
        cpu::rms_norm(&tokens, Some(&self.soft_emb_norm), self.eps, d, &mut normed);
        let out_dim = self.n_embd_out();
        let mut data = vec![0f32; g * g * out_dim];
        cpu::matmul_wide(&self.input_proj, &normed, g * g, &mut data)?;
        Ok(Embeddings {
            n_tokens: g * g,
            // Not an M-RoPE model: llama.cpp reports the tokens as one row.
            nx: g * g,
            ny: 1,
            data,
        })
    }
}
