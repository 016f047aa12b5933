//! Qwen2-VL (`qwen2vl_merger`) and Qwen2.5-VL (`qwen2.5vl_merger`): two-frame patch embedding
//! applied to one still frame, 2D vision rope, a ViT with layer norms (2.0) or RMS norms, a
//! gated FFN and window attention (2.5), then the 2x2 patch merger MLP.

use std::ops::Range;

use tensor::Tensor;
use tensor::cpu;
use tensor::exec::Exec;
use tensor::ops::rope::{RopeConfig, RopeMode};

use crate::ClipError;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::{Embeddings, Encoder, TowerOn, on_backend};
use crate::preprocess::dynamic_resolution;
use crate::projector::{Defaults, Framing, Input, Projector, TokenLimits};
use crate::tower::{Progress, Tower, run_blocks};
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
    tower: Tower,
    head: Head<Vec<f32>>,
    /// The same weights on the GPU, once offloaded: the whole encode runs there.
    #[cfg(feature = "gpu")]
    gpu_head: Option<Head<Tensor>>,
    /// Every `n_wa_pattern`-th layer attends globally, the others within windows (0: all global).
    n_wa_pattern: usize,
    window_size: usize,
}

/// Everything around the tower, on one backend.
struct Head<V> {
    /// The two temporal conv kernels summed (a still image feeds both the same frame), as
    /// the patch matrix `[d, 3·p²]`.
    patch_w: Tensor,
    post_ln: Option<Norm<V>>,
    merger: Ffn<V>,
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
        tower: Tower::new(blocks),
        head: Head {
            patch_w: vit::patch_matrix(&temporal_patch_weight(wl, d, p)?)?,
            post_ln: Norm::opt_load(wl, "v.post_ln", d, norm, hp.eps)?,
            merger: load_merger(wl, d)?,
        },
        #[cfg(feature = "gpu")]
        gpu_head: None,
        n_wa_pattern: hp.n_wa_pattern,
        window_size: if hp.window_size == 0 {
            DEFAULT_WINDOW
        } else {
            hp.window_size
        },
    }))
}

/// The raster index of each token in merge order: each 2x2 merge block is 4 consecutive rows
/// (blocks in raster order, patches inside a block in raster order); with `units`, only the
/// blocks listed (merged-grid raster indices), in that order.
pub fn merge_order(px: usize, py: usize, units: Option<&[usize]>) -> Vec<usize> {
    let pw = px / MERGE;
    let all: Vec<usize>;
    let units = match units {
        Some(u) => u,
        None => {
            all = (0..pw * (py / MERGE)).collect();
            &all
        }
    };
    let mut rows = Vec::with_capacity(units.len() * MERGE * MERGE);
    for &u in units {
        let (by, bx) = ((u / pw) * MERGE, (u % pw) * MERGE);
        for dy in 0..MERGE {
            for dx in 0..MERGE {
                rows.push((by + dy) * px + bx + dx);
            }
        }
    }
    rows
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
        let h = &self.head;
        let head = Head {
            patch_w: exec.weight(&h.patch_w)?,
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
        self.head.merger.down.n_out()
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

impl Qwen2Vl {
    /// The whole encode on one backend; the embeddings are its one read-back.
    fn encode_on<E: Exec>(
        &self,
        tower: &TowerOn<'_, E>,
        head: &Head<E::Vector>,
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
        let unit = MERGE * MERGE;
        let (pw, ph) = (px / MERGE, py / MERGE);
        let patch_w = (&head.patch_w, None);
        let raster = vit::patch_embed_on(e, pixels, width, height, patch_w, self.patch)?;

        let windowed = self.n_wa_pattern > 0;
        let grid = (self.window_size / self.patch / MERGE).max(1);
        let (order, spans) = windows(pw, ph, grid);
        let token_spans: Vec<Range<usize>> =
            spans.iter().map(|r| r.start * unit..r.end * unit).collect();
        // Merge blocks become runs of 4 tokens and, windowed, windows become contiguous runs
        // of blocks: one gather. Positions travel with their tokens.
        let mut pos = merge_positions(px, py);
        let rows = if windowed {
            let mut moved = vec![0i32; 4 * n];
            for c in 0..4 {
                let comp = gather_rows(&pos[c * n..(c + 1) * n], &order, unit);
                moved[c * n..(c + 1) * n].copy_from_slice(&comp);
            }
            pos = moved;
            merge_order(px, py, Some(&order))
        } else {
            merge_order(px, py, None)
        };
        let mut x = e.gather_rows(&raster, d, &rows)?;
        drop(raster);

        let rope = vision_rope(d / self.n_head);
        let setup = |il: usize| {
            let full = !windowed || (il + 1).is_multiple_of(self.n_wa_pattern);
            AttnSetup {
                n_head: self.n_head,
                rope: Some(VisionRope::Sectioned(&rope, &pos)),
                windows: if full { None } else { Some(&token_spans) },
            }
        };
        run_blocks(
            e,
            tower.blocks,
            &mut x,
            n,
            0..tower.blocks.len(),
            &setup,
            progress,
        )?;
        let x = Norm::opt_apply_on(head.post_ln.as_ref(), e, x, d)?;
        let n_out = n / unit;
        let mut data = head.merger.forward_on(e, &x, n_out)?;
        if windowed {
            // Back from window order to raster order of the merged grid.
            let mut back = vec![0usize; order.len()];
            for (w, &r) in order.iter().enumerate() {
                back[r] = w;
            }
            data = e.gather_rows(&data, self.n_embd_out(), &back)?;
        }
        Ok(Embeddings {
            n_tokens: n_out,
            nx: pw,
            ny: ph,
            data: e.download(data)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_order_groups_2x2_blocks() {
        // 4x2 grid of tokens numbered in raster order.
        assert_eq!(merge_order(4, 2, None), [0, 1, 4, 5, 2, 3, 6, 7]);
        assert_eq!(merge_order(4, 2, Some(&[1])), [2, 3, 6, 7]);
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
