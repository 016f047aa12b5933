//! Gemma 3: SigLIP ViT (learned position embeddings, layer norms, GELU FFN) and the Gemma 3
//! projector (average pool to the token grid, soft-embedding RMS norm, input projection).

use tensor::Tensor;
use tensor::cpu;
use tensor::exec::Exec;

use crate::ClipError;
use crate::hparams::EncoderHparams;
use crate::models::{
    Embeddings, EncodeInput, Encoder, TowerOn, encode_alone, encode_batched_on, on_backend,
};
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
    tower: Tower,
    head: Head<Vec<f32>, Vec<f32>>,
    /// The same weights on the GPU, once offloaded: the whole encode runs there.
    #[cfg(feature = "gpu")]
    gpu_head: Option<Head<Tensor, Tensor>>,
}

/// Everything around the tower, on one backend (`V` its vectors, `A` its activations).
struct Head<V, A> {
    /// The patch convolution as a matrix `[n_embd, 3·patch²]`.
    patch_w: Tensor,
    patch_b: Option<V>,
    /// `[n_patches, n_embd]`.
    pos_embd: A,
    post_ln: Option<Norm<V>>,
    soft_emb_norm: V,
    eps: f32,
    /// `[projection_dim, n_embd]` f32 (the file stores it transposed).
    input_proj: Tensor,
}

pub fn build(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let (d, p) = (hp.n_embd, hp.patch_size);
    let side = hp.image_size / p;
    let patch_w = vit::patch_matrix(&wl.tensor_shaped("v.patch_embd.weight", &[d, 3, p, p])?)?;
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
        tower: Tower::new(blocks),
        head: Head {
            patch_w,
            patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
            pos_embd,
            post_ln: Norm::opt_load(wl, "v.post_ln", d, NormKind::Layer, hp.eps)?,
            soft_emb_norm: wl.vector("mm.soft_emb_norm.weight", d)?,
            eps: hp.eps,
            input_proj: Tensor::from_f32(&[text_dim, d], &transposed)?,
        },
        #[cfg(feature = "gpu")]
        gpu_head: None,
    }))
}

impl Encoder for Gemma3 {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        let h = &self.head;
        let head = Head {
            patch_w: exec.weight(&h.patch_w)?,
            patch_b: vit::opt_vector_to_gpu(&h.patch_b, exec)?,
            pos_embd: exec.upload(&h.pos_embd)?,
            post_ln: Norm::opt_to_gpu(&h.post_ln, exec)?,
            soft_emb_norm: exec.vector(&h.soft_emb_norm)?,
            eps: h.eps,
            input_proj: exec.weight(&h.input_proj)?,
        };
        self.tower.offload(exec)?;
        self.gpu_head = Some(head);
        Ok(())
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.head.input_proj.shape()[0]
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
        on_backend!(self, |tower, head| self
            .encode_on(tower, head, inputs, progress))
    }
}

impl Gemma3 {
    /// The whole encode on one backend: patch embedding, tower and projector.
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

    /// Patch embedding and positions: `[n, n_embd]` tokens.
    fn stem<E: Exec>(
        &self,
        e: &E,
        head: &Head<E::Vector, E::Act>,
        pixels: &[f32],
        width: usize,
        height: usize,
    ) -> Result<(E::Act, usize), ClipError> {
        vit::check_pixels(pixels, width, height, self.patch)?;
        let side = width / self.patch;
        let n = side * side;
        let n_pos = self.head.pos_embd.len() / self.n_embd;
        if width != height || n != n_pos {
            return Err(ClipError::BadImage(format!(
                "gemma3 needs the square image_size input ({n_pos} patches), got {width}x{height}"
            )));
        }
        let patch_w = (&head.patch_w, head.patch_b.as_ref());
        let mut x = vit::patch_embed_on(e, pixels, width, height, patch_w, self.patch)?;
        e.add(&mut x, &head.pos_embd)?;
        Ok((x, n))
    }

    /// Post-norm, 2-D average pooling, soft-embedding norm and the input projection of the
    /// tower's output for a `side x side` patch grid; the one download of an encode.
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
        let g = side / self.n_merge;
        let tokens = e.pool_avg_grid(x, [side, side, d], [self.n_merge; 2])?;
        let mut normed = e.alloc(g * g * d)?;
        e.rms_norm(&tokens, &head.soft_emb_norm, head.eps, d, &mut normed)?;
        drop(tokens);
        let mut data = e.alloc(g * g * self.n_embd_out())?;
        e.matmul_wide(&head.input_proj, &normed, g * g, &mut data)?;
        Ok(Embeddings {
            n_tokens: g * g,
            // Not an M-RoPE model: llama.cpp reports the tokens as one row.
            nx: g * g,
            ny: 1,
            data: e.download(data)?,
        })
    }
}
