//! Qwen3-VL (`qwen3vl_merger`): two-frame patch embedding with bias, a learned position grid
//! resized bilinearly to the image, a layer-norm ViT with fused QKV and 2D vision rope, the
//! 2x2 merger, and deepstack mergers on selected layers whose outputs are appended to each row
//! (`[main | deepstack 0 | deepstack 1 ...]`).

use tensor::Tensor;
use tensor::exec::Exec;

use crate::ClipError;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::qwen2vl::{
    MERGE, load_merger, merge_order, merge_positions, qwen_vl_projector, temporal_patch_weight,
    vision_rope,
};
use crate::models::{Embeddings, Encoder, TowerOn, on_backend};
use crate::projector::Projector;
use crate::tower::{Progress, Tower, run_blocks};
use crate::vit::{self, AttnSetup, Block, Ffn, Linear, Norm, NormKind, VisionRope, WeightLoader};

pub const PROJECTOR: Projector = qwen_vl_projector("qwen3vl_merger", build);

/// A deepstack merger: layer norm over merged rows, then `fc1 -> GELU -> fc2`.
struct Deepstack<V> {
    norm: Norm<V>,
    ffn: Ffn<V>,
}

pub struct Qwen3Vl {
    patch: usize,
    n_embd: usize,
    n_head: usize,
    pos_side: usize,
    tower: Tower,
    head: Head<Vec<f32>, Vec<f32>>,
    /// The same weights on the GPU, once offloaded: the whole encode runs there.
    #[cfg(feature = "gpu")]
    gpu_head: Option<Head<Tensor, Tensor>>,
}

/// Everything around the tower, on one backend (`V` its vectors, `A` its activations).
struct Head<V, A> {
    /// The temporal patch kernels summed, as the patch matrix `[d, 3·p²]`.
    patch_w: Tensor,
    patch_b: Option<V>,
    /// Learned `[side·side, d]` position grid.
    pos_embd: A,
    /// Per layer: its deepstack merger, if it has one.
    deepstack: Vec<Option<Deepstack<V>>>,
    post_ln: Option<Norm<V>>,
    merger: Ffn<V>,
}

pub fn build(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let (d, p) = (hp.n_embd, hp.patch_size);
    let blocks = (0..hp.n_layer)
        .map(|il| Block::load(wl, il, d, NormKind::Layer, hp.eps, hp.ffn_act))
        .collect::<Result<Vec<_>, _>>()?;
    let wide = d * MERGE * MERGE;
    let mut deepstack = Vec::with_capacity(hp.n_layer);
    for il in 0..hp.n_layer {
        let flagged = hp.deepstack_layers.get(il).copied().unwrap_or(false);
        deepstack.push(if flagged {
            let pre = format!("v.deepstack.{il}");
            Some(Deepstack {
                norm: Norm::load(wl, &format!("{pre}.norm"), wide, NormKind::Layer, hp.eps)?,
                ffn: Ffn {
                    up: Linear::load(wl, &format!("{pre}.fc1"), wide, wide)?,
                    gate: None,
                    down: Linear::load_to_any_width(wl, &format!("{pre}.fc2"), wide)?,
                    act: FfnAct::Gelu,
                },
            })
        } else {
            None
        });
    }
    let pos = wl.tensor("v.position_embd.weight")?;
    let rows = pos.shape().first().copied().unwrap_or(0);
    let pos_side = (rows as f64).sqrt().round() as usize;
    if pos.shape() != [pos_side * pos_side, d] || pos_side == 0 {
        return Err(ClipError::TensorShape {
            name: "v.position_embd.weight".into(),
            actual: pos.shape().to_vec(),
            expected: vec![pos_side * pos_side, d],
        });
    }
    Ok(Box::new(Qwen3Vl {
        patch: p,
        n_embd: d,
        n_head: hp.n_head,
        pos_side,
        tower: Tower::new(blocks),
        head: Head {
            patch_w: vit::patch_matrix(&temporal_patch_weight(wl, d, p)?)?,
            patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
            pos_embd: pos.to_f32_vec()?,
            deepstack,
            post_ln: Norm::opt_load(wl, "v.post_ln", d, NormKind::Layer, hp.eps)?,
            merger: load_merger(wl, d)?,
        },
        #[cfg(feature = "gpu")]
        gpu_head: None,
    }))
}

impl Encoder for Qwen3Vl {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        let h = &self.head;
        let deepstack = h
            .deepstack
            .iter()
            .map(|ds| {
                ds.as_ref()
                    .map(|ds| -> Result<_, ClipError> {
                        Ok(Deepstack {
                            norm: ds.norm.to_gpu(exec)?,
                            ffn: ds.ffn.to_gpu(exec)?,
                        })
                    })
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        let head = Head {
            patch_w: exec.weight(&h.patch_w)?,
            patch_b: vit::opt_vector_to_gpu(&h.patch_b, exec)?,
            pos_embd: exec.upload(&h.pos_embd)?,
            deepstack,
            post_ln: Norm::opt_to_gpu(&h.post_ln, exec)?,
            merger: h.merger.to_gpu(exec)?,
        };
        self.tower.offload(exec)?;
        self.gpu_head = Some(head);
        Ok(())
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        let n_ds = self.head.deepstack.iter().filter(|d| d.is_some()).count();
        self.head.merger.down.n_out() * (1 + n_ds)
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

impl Qwen3Vl {
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
        vit::check_pixels(pixels, width, height, self.patch * MERGE)?;
        let d = self.n_embd;
        let (px, py) = (width / self.patch, height / self.patch);
        let n = px * py;
        let n_out = n / (MERGE * MERGE);
        let patch_w = (&head.patch_w, head.patch_b.as_ref());
        let mut raster = vit::patch_embed_on(e, pixels, width, height, patch_w, self.patch)?;
        let side = self.pos_side;
        if (px, py) == (side, side) {
            e.add(&mut raster, &head.pos_embd)?;
        } else {
            let fitted = e.resize_bilinear_grid(&head.pos_embd, [side, side, d], [py, px])?;
            e.add(&mut raster, &fitted)?;
        }
        let mut x = e.gather_rows(&raster, d, &merge_order(px, py, None))?;
        drop(raster);
        let pos = merge_positions(px, py);
        let rope = vision_rope(d / self.n_head);
        let setup = AttnSetup {
            n_head: self.n_head,
            rope: Some(VisionRope::Sectioned(&rope, &pos)),
            windows: None,
        };
        let wide = d * MERGE * MERGE;
        let mut features = Vec::new();
        // The tower runs in segments that end at each deepstack tap.
        let mut start = 0;
        for (il, ds) in head.deepstack.iter().enumerate() {
            if let Some(ds) = ds {
                run_blocks(
                    e,
                    tower.blocks,
                    &mut x,
                    n,
                    start..il + 1,
                    &|_| setup,
                    progress,
                )?;
                start = il + 1;
                // Merged rows are 4 consecutive tokens, already adjacent in merge order.
                let mut normed = e.alloc(n * d)?;
                ds.norm.forward_on(e, &x, wide, &mut normed)?;
                features.push(ds.ffn.forward_on(e, &normed, n_out)?);
            }
        }
        let layers = start..tower.blocks.len();
        run_blocks(e, tower.blocks, &mut x, n, layers, &|_| setup, progress)?;
        let x = Norm::opt_apply_on(head.post_ln.as_ref(), e, x, d)?;
        let main = head.merger.forward_on(e, &x, n_out)?;
        drop(x);
        let data = if features.is_empty() {
            main
        } else {
            // Row t is [main_t | deepstack 0_t | ...]: stack the parts as blocks of rows,
            // then interleave them with one gather.
            let part = head.merger.down.n_out();
            let k = 1 + features.len();
            let mut stacked = e.alloc(k * n_out * part)?;
            e.copy_rows(&mut stacked, part, 0, &main)?;
            for (j, f) in features.iter().enumerate() {
                e.copy_rows(&mut stacked, part, (j + 1) * n_out, f)?;
            }
            let rows: Vec<usize> = (0..n_out)
                .flat_map(|t| (0..k).map(move |j| j * n_out + t))
                .collect();
            e.gather_rows(&stacked, part, &rows)?
        };
        Ok(Embeddings {
            n_tokens: n_out,
            nx: px / MERGE,
            ny: py / MERGE,
            data: e.download(data)?,
        })
    }
}
