//! Qwen2-VL (`qwen2vl_merger`) and Qwen2.5-VL (`qwen2.5vl_merger`): two-frame patch embedding
//! applied to one still frame, 2D vision rope, a ViT with layer norms (2.0) or RMS norms, a
//! gated FFN and window attention (2.5), then the 2x2 patch merger MLP.

use std::ops::Range;

use tensor::Tensor;
use tensor::cpu;
use tensor::ops::rope::{RopeConfig, RopeMode};

use crate::ClipError;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::{Embeddings, Encoder};
use crate::preprocess::dynamic_resolution;
use crate::projector::{Defaults, Framing, Input, Projector, TokenLimits};
use crate::tower::{Progress, Tower};
use crate::vit::{self, AttnSetup, Block, Ffn, Linear, Norm, NormKind, VisionRope, WeightLoader};

/// Patches merged per side by the Qwen mergers (llama.cpp hard-codes 2 as well).
pub const MERGE: usize = 2;

/// Window attention default of llama.cpp when the file gives no `clip.vision.window_size`.
pub(crate) const DEFAULT_WINDOW: usize = 112;

/// What every Qwen-VL generation shares: `<|vision_start|>` … `<|vision_end|>` around a
/// dynamic-resolution image of 8 to 4096 merged tokens (llama.cpp's defaults).
pub const fn qwen_vl_projector(name: &'static str, build: crate::projector::BuildFn) -> Projector {
    Projector {
        name,
        input: Input::Image(dynamic_resolution),
        framing: Framing::wrap("<|vision_start|>", "<|vision_end|>"),
        non_causal: false,
        defaults: Defaults {
            merge: MERGE,
            token_limits: Some(TokenLimits { min: 8, max: 4096 }),
        },
        build,
    }
}

pub const QWEN2VL: Projector = qwen_vl_projector("qwen2vl_merger", build);
pub const QWEN25VL: Projector = qwen_vl_projector("qwen2.5vl_merger", build);

pub struct Qwen2Vl {
    patch: usize,
    n_embd: usize,
    n_head: usize,
    /// The two temporal conv kernels summed: a still image feeds both the same frame.
    patch_w: Tensor,
    tower: Tower,
    post_ln: Option<Norm>,
    merger: Ffn,
    /// Every `n_wa_pattern`-th layer attends globally, the others within windows (0: all global).
    n_wa_pattern: usize,
    window_size: usize,
}

/// Sum of `v.patch_embd.weight` and `v.patch_embd.weight.1`, `[d, 3, p, p]` f32.
pub fn temporal_patch_weight(wl: &WeightLoader, d: usize, p: usize) -> Result<Tensor, ClipError> {
    let shape = [d, 3, p, p];
    let mut w = wl
        .tensor_shaped("v.patch_embd.weight", &shape)?
        .to_f32_vec()?;
    if wl.has("v.patch_embd.weight.1") {
        let w1 = wl
            .tensor_shaped("v.patch_embd.weight.1", &shape)?
            .to_f32_vec()?;
        cpu::add(&mut w, &w1);
    }
    Ok(Tensor::from_f32(&shape, &w)?)
}

/// The merger MLP `mm.0 -> GELU -> mm.2` over rows of `MERGE² · d`.
/// The text width is taken from `mm.2` itself.
pub fn load_merger(wl: &WeightLoader, d: usize) -> Result<Ffn, ClipError> {
    let wide = d * MERGE * MERGE;
    Ok(Ffn {
        up: Linear::load(wl, "mm.0", wide, wide)?,
        gate: None,
        down: Linear::load_to_any_width(wl, "mm.2", wide)?,
        act: FfnAct::Gelu,
    })
}

pub fn build(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let (d, p) = (hp.n_embd, hp.patch_size);
    let norm = if hp.projector_type == "qwen2.5vl_merger" {
        NormKind::Rms
    } else {
        NormKind::Layer
    };
    let blocks = (0..hp.n_layer)
        .map(|il| Block::load(wl, il, d, norm, hp.eps, hp.ffn_act))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Box::new(Qwen2Vl {
        patch: p,
        n_embd: d,
        n_head: hp.n_head,
        patch_w: temporal_patch_weight(wl, d, p)?,
        tower: Tower::new(blocks),
        post_ln: Norm::opt_load(wl, "v.post_ln", d, norm, hp.eps)?,
        merger: load_merger(wl, d)?,
        n_wa_pattern: hp.n_wa_pattern,
        window_size: if hp.window_size == 0 {
            DEFAULT_WINDOW
        } else {
            hp.window_size
        },
    }))
}

/// Reorders raster `[py·px, d]` tokens so each 2x2 merge block is 4 consecutive rows
/// (blocks in raster order, patches inside a block in raster order).
pub fn to_merge_order(x: &[f32], px: usize, py: usize, d: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for by in (0..py).step_by(MERGE) {
        for bx in (0..px).step_by(MERGE) {
            for dy in 0..MERGE {
                let row = (by + dy) * px + bx;
                out.extend_from_slice(&x[row * d..(row + MERGE) * d]);
            }
        }
    }
    out
}

/// Vision rope positions in merge order, ggml's sectioned layout: all y, all x, all y, all x.
pub fn merge_positions(px: usize, py: usize) -> Vec<i32> {
    let n = px * py;
    let mut pos = vec![0i32; 4 * n];
    let mut t = 0;
    for by in (0..py).step_by(MERGE) {
        for bx in (0..px).step_by(MERGE) {
            for dy in 0..MERGE {
                for dx in 0..MERGE {
                    let (y, x) = ((by + dy) as i32, (bx + dx) as i32);
                    pos[t] = y;
                    pos[n + t] = x;
                    pos[2 * n + t] = y;
                    pos[3 * n + t] = x;
                    t += 1;
                }
            }
        }
    }
    pos
}

/// The rope every Qwen vision encoder uses: half the head rotates per axis pair, base 1e4.
pub fn vision_rope(head_dim: usize) -> RopeConfig {
    let s = head_dim / 4;
    RopeConfig::new(RopeMode::Vision { sections: [s; 4] }, head_dim / 2, 10000.0)
}

/// Window layout over the merged grid: `order[w] = raster index of the w-th merged unit in
/// window order`, plus each window's span in merged units.
fn windows(pw: usize, ph: usize, grid: usize) -> (Vec<usize>, Vec<Range<usize>>) {
    let mut order = Vec::with_capacity(pw * ph);
    let mut spans = Vec::new();
    for y in (0..ph).step_by(grid) {
        for x in (0..pw).step_by(grid) {
            let start = order.len();
            for yy in y..(y + grid).min(ph) {
                for xx in x..(x + grid).min(pw) {
                    order.push(yy * pw + xx);
                }
            }
            spans.push(start..order.len());
        }
    }
    (order, spans)
}

/// `out[i] = rows[order[i]]` for rows of `width` values.
fn gather_rows<T: Copy>(rows: &[T], order: &[usize], width: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(order.len() * width);
    for &o in order {
        out.extend_from_slice(&rows[o * width..(o + 1) * width]);
    }
    out
}

impl Encoder for Qwen2Vl {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        self.tower.offload(exec)
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        self.merger.down.n_out()
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
        let unit = MERGE * MERGE;
        let (pw, ph) = (px / MERGE, py / MERGE);
        let raster = vit::patch_embed(pixels, width, height, &self.patch_w, self.patch)?;
        let mut x = to_merge_order(&raster, px, py, d);
        let mut pos = merge_positions(px, py);

        let windowed = self.n_wa_pattern > 0;
        let grid = (self.window_size / self.patch / MERGE).max(1);
        let (order, spans) = windows(pw, ph, grid);
        let token_spans: Vec<Range<usize>> =
            spans.iter().map(|r| r.start * unit..r.end * unit).collect();
        if windowed {
            // Windows become contiguous runs of tokens; positions travel with their tokens.
            x = gather_rows(&x, &order, unit * d);
            let mut moved = vec![0i32; 4 * n];
            for c in 0..4 {
                let comp = gather_rows(&pos[c * n..(c + 1) * n], &order, unit);
                moved[c * n..(c + 1) * n].copy_from_slice(&comp);
            }
            pos = moved;
        }

        let rope = vision_rope(d / self.n_head);
        let setup = |il: usize| {
            let full = !windowed || (il + 1).is_multiple_of(self.n_wa_pattern);
            AttnSetup {
                n_head: self.n_head,
                rope: Some(VisionRope::Sectioned(&rope, &pos)),
                windows: if full { None } else { Some(&token_spans) },
            }
        };
        self.tower
            .run(&mut x, n, 0..self.tower.len(), &setup, progress)?;
        if let Some(ln) = &self.post_ln {
            x = ln.forward(&x);
        }
        let n_out = n / unit;
        let mut data = self.merger.forward(&x, n_out)?;
        if windowed {
            // Back from window order to raster order of the merged grid.
            let width = self.n_embd_out();
            let mut raster = vec![0f32; data.len()];
            for (w, &r) in order.iter().enumerate() {
                raster[r * width..(r + 1) * width]
                    .copy_from_slice(&data[w * width..(w + 1) * width]);
            }
            data = raster;
        }
        Ok(Embeddings {
            n_tokens: n_out,
            nx: pw,
            ny: ph,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_groups_2x2_blocks() {
        // 4x2 grid of 1-wide tokens numbered in raster order.
        let x: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(
            to_merge_order(&x, 4, 2, 1),
            [0., 1., 4., 5., 2., 3., 6., 7.]
        );
        let pos = merge_positions(4, 2);
        assert_eq!(&pos[..8], [0, 0, 1, 1, 0, 0, 1, 1]); // y
        assert_eq!(&pos[8..16], [0, 1, 0, 1, 2, 3, 2, 3]); // x
        assert_eq!(&pos[..16], &pos[16..]);
    }

    #[test]
    fn windows_cover_the_grid_once_with_clipped_edges() {
        // 5x3 merged grid, 2x2 windows: 3 windows on row band 0, 3 on band 1 (height 1).
        let (order, spans) = windows(5, 3, 2);
        assert_eq!(spans.len(), 6);
        assert_eq!(&order[..4], [0, 1, 5, 6]);
        assert_eq!(spans[2], 8..10); // right edge window is 1 wide
        let mut seen = order.clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..15).collect::<Vec<_>>());
    }
}
