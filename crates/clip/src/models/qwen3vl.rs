//! Qwen3-VL (`qwen3vl_merger`): two-frame patch embedding with bias, a learned position grid
//! resized bilinearly to the image, a layer-norm ViT with fused QKV and 2D vision rope, the
//! 2x2 merger, and deepstack mergers on selected layers whose outputs are appended to each row
//! (`[main | deepstack 0 | deepstack 1 ...]`).

use tensor::Tensor;
use tensor::cpu;

use crate::ClipError;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::qwen2vl::{
    MERGE, load_merger, merge_positions, qwen_vl_projector, temporal_patch_weight, to_merge_order,
    vision_rope,
};
use crate::models::{Embeddings, Encoder};
use crate::projector::Projector;
use crate::tower::{Progress, Tower};
use crate::vit::{self, AttnSetup, Block, Ffn, Linear, Norm, NormKind, VisionRope, WeightLoader};

pub const PROJECTOR: Projector = qwen_vl_projector("qwen3vl_merger", build);

/// A deepstack merger: layer norm over merged rows, then `fc1 -> GELU -> fc2`.
struct Deepstack {
    norm: Norm,
    ffn: Ffn,
}

pub struct Qwen3Vl {
    patch: usize,
    n_embd: usize,
    n_head: usize,
    patch_w: Tensor,
    patch_b: Option<Vec<f32>>,
    /// Learned `[side·side, d]` position grid.
    pos_embd: Vec<f32>,
    pos_side: usize,
    tower: Tower,
    /// Per layer: its deepstack merger, if it has one.
    deepstack: Vec<Option<Deepstack>>,
    post_ln: Option<Norm>,
    merger: Ffn,
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
        patch_w: temporal_patch_weight(wl, d, p)?,
        patch_b: wl.opt_vector("v.patch_embd.bias", d)?,
        pos_embd: pos.to_f32_vec()?,
        pos_side,
        tower: Tower::new(blocks),
        deepstack,
        post_ln: Norm::opt_load(wl, "v.post_ln", d, NormKind::Layer, hp.eps)?,
        merger: load_merger(wl, d)?,
    }))
}

/// Source coordinate and weight of output index `i` along one axis, ggml's bilinear
/// upscale with aligned corners.
fn align_corners(i: usize, n_out: usize, n_in: usize) -> (usize, usize, f32) {
    let sf = if n_out > 1 && n_in > 1 {
        (n_out - 1) as f32 / (n_in - 1) as f32
    } else {
        n_out as f32 / n_in as f32
    };
    let s = i as f32 / sf;
    let f = s.floor();
    let lo = (f.max(0.0) as usize).min(n_in - 1);
    let hi = (lo + 1).min(n_in - 1);
    (lo, hi, (s - f).clamp(0.0, 1.0))
}

/// Resizes the `[side, side, d]` grid to `[py, px, d]` (raster order).
fn resize_grid(table: &[f32], side: usize, d: usize, px: usize, py: usize) -> Vec<f32> {
    if px == side && py == side {
        return table.to_vec();
    }
    let mut out = vec![0f32; px * py * d];
    for y in 0..py {
        let (y0, y1, dy) = align_corners(y, py, side);
        for x in 0..px {
            let (x0, x1, dx) = align_corners(x, px, side);
            let row = |yy: usize, xx: usize| &table[(yy * side + xx) * d..(yy * side + xx + 1) * d];
            let (a, b, c, e) = (row(y0, x0), row(y0, x1), row(y1, x0), row(y1, x1));
            let dst = &mut out[(y * px + x) * d..(y * px + x + 1) * d];
            for k in 0..d {
                dst[k] = a[k] * (1.0 - dx) * (1.0 - dy)
                    + b[k] * dx * (1.0 - dy)
                    + c[k] * (1.0 - dx) * dy
                    + e[k] * dx * dy;
            }
        }
    }
    out
}

impl Encoder for Qwen3Vl {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        self.tower.offload(exec)
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        let n_ds = self.deepstack.iter().filter(|d| d.is_some()).count();
        self.merger.down.n_out() * (1 + n_ds)
    }

    fn encode(
        &self,
        pixels: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        vit::check_pixels(pixels, width, height, self.patch * MERGE)?;
        let d = self.n_embd;
        let (px, py) = (width / self.patch, height / self.patch);
        let n = px * py;
        let n_out = n / (MERGE * MERGE);
        let mut raster = vit::patch_embed(pixels, width, height, &self.patch_w, self.patch)?;
        if let Some(b) = &self.patch_b {
            cpu::add_rows(&mut raster, b);
        }
        cpu::add(
            &mut raster,
            &resize_grid(&self.pos_embd, self.pos_side, d, px, py),
        );
        let mut x = to_merge_order(&raster, px, py, d);
        let pos = merge_positions(px, py);
        let rope = vision_rope(d / self.n_head);
        let setup = AttnSetup {
            n_head: self.n_head,
            rope: Some(VisionRope::Sectioned(&rope, &pos)),
            windows: None,
        };
        let mut features = Vec::new();
        // The tower runs in segments that end at each deepstack tap.
        let mut start = 0;
        for (il, ds) in self.deepstack.iter().enumerate() {
            if let Some(ds) = ds {
                self.tower
                    .run(&mut x, n, start..il + 1, &|_| setup, progress)?;
                start = il + 1;
                // Merged rows are 4 consecutive tokens, already adjacent in merge order.
                features.push(ds.ffn.forward(&ds.norm.forward(&x), n_out)?);
            }
        }
        self.tower
            .run(&mut x, n, start..self.tower.len(), &|_| setup, progress)?;
        if let Some(ln) = &self.post_ln {
            x = ln.forward(&x);
        }
        let main = self.merger.forward(&x, n_out)?;
        let width_out = self.n_embd_out();
        let part = self.merger.down.n_out();
        let mut data = Vec::with_capacity(n_out * width_out);
        for t in 0..n_out {
            data.extend_from_slice(&main[t * part..(t + 1) * part]);
            for f in &features {
                data.extend_from_slice(&f[t * part..(t + 1) * part]);
            }
        }
        Ok(Embeddings {
            n_tokens: n_out,
            nx: px / MERGE,
            ny: py / MERGE,
            data,
        })
    }
}
