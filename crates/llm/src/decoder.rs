//! The shared decoder: one layer implementation for every architecture, with the
//! per-architecture differences taken from [`HParams`] and the optional weights.

use crate::batch::{Batch, BatchInput, Logits};
use crate::error::{LlmError, Result};
use crate::hparams::{FfnAct, HParams};
use crate::kv_cache::{CellPos, KvCache};
use crate::weights::{LayerWeights, Weights};
use tensor::cpu;
use tensor::ops::attention::{AttnMask, AttnParams};
use tensor::ops::rope::RopeConfig;

/// Tokens processed per forward pass: bounds scratch memory for long prompts. Public because
/// callers that reuse KV prefixes predict from it how each cell's batch is cut.
pub const MAX_UBATCH: usize = 512;

pub struct Decoder {
    pub hp: HParams,
    pub w: Weights,
    rope_global: RopeConfig,
    rope_swa: RopeConfig,
}

/// Per-ubatch working buffers.
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
}

impl Scratch {
    fn new(hp: &HParams, n: usize) -> Self {
        let z = |len: usize| vec![0f32; len];
        Self {
            x: z(n * hp.n_embd),
            h: z(n * hp.n_embd),
            q: z(n * hp.q_dim()),
            k: z(n * hp.kv_dim()),
            v: z(n * hp.kv_dim()),
            attn: z(n * hp.q_dim()),
            o: z(n * hp.n_embd),
            gate: z(n * hp.n_ff),
            up: z(n * hp.n_ff),
            act: z(n * hp.n_ff),
        }
    }
}

fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32, cols: usize, tmp: &mut Vec<f32>) {
    tmp.resize(x.len(), 0.0);
    cpu::rms_norm(x, Some(w), eps, cols, tmp);
    x.copy_from_slice(tmp);
}

impl Decoder {
    pub fn new(hp: HParams, w: Weights) -> Self {
        let rope = |base: f32, scale: f32| RopeConfig {
            mode: hp.rope_mode.clone(),
            n_dims: hp.n_rot,
            freq_base: base,
            freq_scale: scale,
            freq_factors: w.rope_freqs.clone(),
            attn_factor: 1.0,
        };
        let rope_global = rope(hp.rope_base, hp.rope_scale);
        let rope_swa = rope(hp.rope_base_swa, hp.rope_scale_swa);
        Self {
            hp,
            w,
            rope_global,
            rope_swa,
        }
    }

    pub fn n_vocab(&self) -> usize {
        self.w.n_vocab()
    }

    /// Number of position components per token (4 for M-RoPE models).
    pub fn n_pos_comp(&self) -> usize {
        if self.hp.arch.uses_mrope() { 4 } else { 1 }
    }

    /// Runs a batch through the model, appending its K/V to `cache`. Returns logits
    /// `[rows, n_vocab]` for the rows `batch.logits` asks for.
    pub fn decode(&self, cache: &mut KvCache, batch: &Batch) -> Result<Vec<f32>> {
        let n = self.batch_len(batch)?;
        let mut logits = Vec::new();
        let group = if batch.non_causal {
            cache.new_group()
        } else {
            0
        };
        let mut start = 0;
        while start < n {
            let len = MAX_UBATCH.min(n - start);
            let last_chunk = start + len == n;
            let want = match batch.logits {
                Logits::None => Logits::None,
                Logits::All => Logits::All,
                Logits::Last if last_chunk => Logits::Last,
                Logits::Last => Logits::None,
            };
            let out = self.forward_ubatch(cache, batch, n, start, len, group, want)?;
            logits.extend_from_slice(&out);
            start += len;
        }
        Ok(logits)
    }

    fn batch_len(&self, batch: &Batch) -> Result<usize> {
        let n = match batch.input {
            BatchInput::Tokens(t) => {
                let n_vocab = self.n_vocab();
                if let Some(&id) = t.iter().find(|&&id| id as usize >= n_vocab) {
                    return Err(LlmError::BadToken { id, n_vocab });
                }
                t.len()
            }
            BatchInput::Embeddings(e) => {
                let w = self.hp.n_embd_inp();
                if e.len() % w != 0 {
                    return Err(LlmError::EmbeddingWidth {
                        expected: w,
                        got: e.len(),
                    });
                }
                e.len() / w
            }
        };
        if n == 0 {
            return Err(LlmError::BadBatch("empty batch".into()));
        }
        let comp = self.n_pos_comp();
        if batch.pos.len() != n * comp {
            return Err(LlmError::BadBatch(format!(
                "{} positions for {n} tokens ({comp} per token expected)",
                batch.pos.len()
            )));
        }
        Ok(n)
    }

    /// Positions of tokens `start..start+len` of the batch, in the layout rope wants.
    fn ubatch_positions(&self, batch: &Batch, n: usize, start: usize, len: usize) -> Vec<i32> {
        let comp = self.n_pos_comp();
        let mut out = Vec::with_capacity(len * comp);
        for c in 0..comp {
            out.extend_from_slice(&batch.pos[c * n + start..c * n + start + len]);
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_ubatch(
        &self,
        cache: &mut KvCache,
        batch: &Batch,
        n_total: usize,
        start: usize,
        n: usize,
        group: u32,
        want: Logits,
    ) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let e = hp.n_embd;
        let pos = self.ubatch_positions(batch, n_total, start, n);
        let mrope = hp.arch.uses_mrope();
        let cells: Vec<CellPos> = (0..n)
            .map(|i| CellPos {
                t: pos[i],
                y: if mrope { pos[n + i] } else { 0 },
                x: if mrope { pos[2 * n + i] } else { 0 },
                group,
            })
            .collect();
        let first_cell = cache.len();
        cache.push_cells(cells)?;
        let n_kv = cache.len();

        let mut s = Scratch::new(hp, n);
        let mut deepstack: Option<(&[f32], usize)> = None;
        match batch.input {
            BatchInput::Tokens(t) => {
                cpu::get_rows(&self.w.tok_embd, &t[start..start + n], &mut s.x)?;
                if let Some(sc) = hp.embed_scale {
                    cpu::scale(&mut s.x, sc);
                }
            }
            BatchInput::Embeddings(all) => {
                let w = hp.n_embd_inp();
                let rows = &all[start * w..(start + n) * w];
                for i in 0..n {
                    s.x[i * e..(i + 1) * e].copy_from_slice(&rows[i * w..i * w + e]);
                }
                if hp.n_deepstack > 0 {
                    deepstack = Some((rows, w));
                }
            }
        }

        let (q_rank, k_rank) = mask_positions(cache.cells(), first_cell, mrope);
        let q_group = vec![group; n];
        let k_group: Vec<u32> = cache.cells().iter().map(|c| c.group).collect();
        let mut tmp = Vec::new();

        for (il, lw) in self.w.layers.iter().enumerate() {
            let swa = hp.swa_layers[il];
            self.attention_block(
                cache, lw, il, &mut s, &pos, n, first_cell, n_kv, swa, &q_rank, &k_rank, &q_group,
                &k_group, &mut tmp,
            )?;
            self.ffn_block(lw, &mut s, n, &mut tmp)?;
            if let Some((rows, w)) = deepstack
                && il < hp.n_deepstack
            {
                // Deepstack slice il (after the main embedding) joins the output of layer il.
                for i in 0..n {
                    let off = i * w + (il + 1) * e;
                    cpu::add(&mut s.x[i * e..(i + 1) * e], &rows[off..off + e]);
                }
            }
        }

        let rows: Vec<usize> = match want {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => vec![n - 1],
            Logits::All => (0..n).collect(),
        };
        let mut h = Vec::with_capacity(rows.len() * e);
        for &r in &rows {
            h.extend_from_slice(&s.x[r * e..(r + 1) * e]);
        }
        rms_norm_inplace(&mut h, &self.w.output_norm, hp.rms_eps, e, &mut tmp);
        let n_vocab = self.n_vocab();
        let mut logits = vec![0f32; rows.len() * n_vocab];
        cpu::matmul(&self.w.output, &h, rows.len(), &mut logits)?;
        if let Some(cap) = hp.final_softcap {
            for l in &mut logits {
                *l = (*l / cap).tanh() * cap;
            }
        }
        Ok(logits)
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        cache: &mut KvCache,
        lw: &LayerWeights,
        il: usize,
        s: &mut Scratch,
        pos: &[i32],
        n: usize,
        first_cell: usize,
        n_kv: usize,
        swa: bool,
        q_rank: &[i32],
        k_rank: &[i32],
        q_group: &[u32],
        k_group: &[u32],
        tmp: &mut Vec<f32>,
    ) -> Result<()> {
        let hp = &self.hp;
        let (e, hd) = (hp.n_embd, hp.head_dim);
        cpu::rms_norm(&s.x, Some(&lw.attn_norm), hp.rms_eps, e, &mut s.h);
        cpu::matmul(&lw.wq, &s.h, n, &mut s.q)?;
        cpu::matmul(&lw.wk, &s.h, n, &mut s.k)?;
        cpu::matmul(&lw.wv, &s.h, n, &mut s.v)?;
        if let Some(b) = &lw.bq {
            cpu::add_rows(&mut s.q, b);
        }
        if let Some(b) = &lw.bk {
            cpu::add_rows(&mut s.k, b);
        }
        if let Some(b) = &lw.bv {
            cpu::add_rows(&mut s.v, b);
        }
        if let Some(w) = &lw.q_norm {
            rms_norm_inplace(&mut s.q, w, hp.rms_eps, hd, tmp);
        }
        if let Some(w) = &lw.k_norm {
            rms_norm_inplace(&mut s.k, w, hp.rms_eps, hd, tmp);
        }
        let rope = if swa {
            &self.rope_swa
        } else {
            &self.rope_global
        };
        cpu::rope(&mut s.q, n, hp.n_head, hd, pos, rope);
        cpu::rope(&mut s.k, n, hp.n_head_kv, hd, pos, rope);
        if let Some(sc) = hp.q_prescale {
            cpu::scale(&mut s.q, sc);
        }
        cache.store(il, first_cell, &s.k, &s.v);

        let (kd, vd) = cache.view(il, n_kv);
        let mask = AttnMask {
            q_pos: q_rank,
            k_pos: k_rank,
            causal: true,
            window: if swa { hp.n_swa } else { None },
            q_group: Some(q_group),
            k_group: Some(k_group),
        };
        let params = AttnParams {
            n_head: hp.n_head,
            n_kv_head: hp.n_head_kv,
            head_dim: hd,
            scale: hp.attn_scale,
            softcap: hp.attn_softcap,
        };
        cpu::attention(&s.q, kd, vd, &mask, &params, &mut s.attn);
        cpu::matmul(&lw.wo, &s.attn, n, &mut s.o)?;
        if let Some(b) = &lw.bo {
            cpu::add_rows(&mut s.o, b);
        }
        if let Some(w) = &lw.attn_post_norm {
            rms_norm_inplace(&mut s.o, w, hp.rms_eps, e, tmp);
        }
        cpu::add(&mut s.x, &s.o);
        Ok(())
    }

    fn ffn_block(
        &self,
        lw: &LayerWeights,
        s: &mut Scratch,
        n: usize,
        tmp: &mut Vec<f32>,
    ) -> Result<()> {
        let hp = &self.hp;
        cpu::rms_norm(&s.x, Some(&lw.ffn_norm), hp.rms_eps, hp.n_embd, &mut s.h);
        cpu::matmul(&lw.ffn_gate, &s.h, n, &mut s.gate)?;
        cpu::matmul(&lw.ffn_up, &s.h, n, &mut s.up)?;
        match hp.ffn_act {
            FfnAct::SwiGlu => cpu::swiglu(&s.gate, &s.up, &mut s.act),
            FfnAct::GeGlu => crate::compat::geglu(&s.gate, &s.up, &mut s.act),
        }
        cpu::matmul(&lw.ffn_down, &s.act, n, &mut s.o)?;
        if let Some(w) = &lw.ffn_post_norm {
            rms_norm_inplace(&mut s.o, w, hp.rms_eps, hp.n_embd, tmp);
        }
        cpu::add(&mut s.x, &s.o);
        Ok(())
    }
}

/// Positions the attention mask compares. Plain models compare token positions. M-RoPE
/// models order cells lexicographically by (t, y, x), as llama.cpp's KV cache does (image
/// tokens share t, so an image is causal in raster order and later text sees all of it);
/// that order is turned into dense ranks so the kernel can keep comparing integers.
fn mask_positions(cells: &[CellPos], first_query: usize, mrope: bool) -> (Vec<i32>, Vec<i32>) {
    let k: Vec<i32> = if mrope {
        let mut order: Vec<usize> = (0..cells.len()).collect();
        order.sort_by_key(|&i| (cells[i].t, cells[i].y, cells[i].x));
        let mut rank = vec![0i32; cells.len()];
        let mut r = 0i32;
        for (k, &i) in order.iter().enumerate() {
            if k > 0 {
                let (a, b) = (cells[order[k - 1]], cells[i]);
                if (a.t, a.y, a.x) != (b.t, b.y, b.x) {
                    r += 1;
                }
            }
            rank[i] = r;
        }
        rank
    } else {
        cells.iter().map(|c| c.t).collect()
    };
    let q = k[first_query..].to_vec();
    (q, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(t: i32, y: i32, x: i32) -> CellPos {
        CellPos { t, y, x, group: 0 }
    }

    #[test]
    fn mrope_mask_ranks_are_lexicographic() {
        // text at 0, image cells at t=1 in raster order (y, x), text after at t=3
        let cells = [
            cell(0, 0, 0),
            cell(1, 0, 0),
            cell(1, 0, 1),
            cell(1, 1, 0),
            cell(3, 3, 3),
        ];
        let (q, k) = mask_positions(&cells, 1, true);
        assert_eq!(k, vec![0, 1, 2, 3, 4]);
        assert_eq!(q, vec![1, 2, 3, 4]);
    }
}
