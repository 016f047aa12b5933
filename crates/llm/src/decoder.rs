//! The shared decoder: one layer implementation for every architecture, with the
//! per-architecture differences taken from [`HParams`] and the optional weights.
//!
//! The layer code is written once against [`Exec`]: layers `0..first_gpu_layer` run on the
//! CPU, the rest (and the output head, when offloaded) on a GPU ([`crate::offload`]).

use crate::batch::{Batch, BatchInput, Logits};
use crate::error::{LlmError, Result};
use crate::hparams::{FfnAct, HParams};
use crate::kv_cache::{CellPos, KvCache, KvType};
use crate::weights::{LayerWeights, Weights};
use tensor::Tensor;
use tensor::cpu;
use tensor::exec::{CpuExec, Exec};
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
    #[cfg(feature = "gpu")]
    pub(crate) offload: Option<crate::offload::Offload>,
}

/// Per-ubatch working buffers of one backend.
struct Scratch<A> {
    x: A,
    h: A,
    q: A,
    k: A,
    v: A,
    attn: A,
    o: A,
    gate: A,
    up: A,
    act: A,
    tmp: A,
}

impl<A> Scratch<A> {
    fn new<E: Exec<Act = A>>(e: &E, hp: &HParams, n: usize, x: A) -> Result<Self> {
        let z = |len: usize| e.alloc(len);
        Ok(Self {
            x,
            h: z(n * hp.n_embd)?,
            q: z(n * hp.q_dim())?,
            k: z(n * hp.kv_dim())?,
            v: z(n * hp.kv_dim())?,
            attn: z(n * hp.q_dim())?,
            o: z(n * hp.n_embd)?,
            gate: z(n * hp.n_ff)?,
            up: z(n * hp.n_ff)?,
            act: z(n * hp.n_ff)?,
            tmp: z(0)?,
        })
    }
}

/// What every layer of one ubatch shares: positions, the mask's inputs and where its cells go.
struct UbatchCtx<'a> {
    n: usize,
    pos: &'a [i32],
    first_cell: usize,
    n_kv: usize,
    q_rank: &'a [i32],
    k_rank: &'a [i32],
    q_group: &'a [u32],
    k_group: &'a [u32],
    /// Media rows with their deepstack slices (Qwen3-VL), and the row width.
    deepstack: Option<(&'a [f32], usize)>,
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
            #[cfg(feature = "gpu")]
            offload: None,
        }
    }

    pub fn n_vocab(&self) -> usize {
        self.w.n_vocab()
    }

    /// Number of position components per token (4 for M-RoPE models).
    pub fn n_pos_comp(&self) -> usize {
        if self.hp.arch.uses_mrope() { 4 } else { 1 }
    }

    /// The first layer that runs on a GPU (`n_layer` when none does).
    pub fn first_gpu_layer(&self) -> usize {
        #[cfg(feature = "gpu")]
        if let Some(o) = &self.offload {
            return o.first_layer;
        }
        self.hp.n_layer
    }

    /// A KV cache of `n_ctx` cells with each layer's rows where that layer runs.
    pub fn new_cache(&self, n_ctx: usize, kind: KvType) -> Result<KvCache> {
        let (n_layer, kv_dim) = (self.hp.n_layer, self.hp.kv_dim());
        let split = self.first_gpu_layer();
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for il in 0..n_layer {
            let store = || -> Result<_> {
                #[cfg(feature = "gpu")]
                if il >= split
                    && let Some(o) = &self.offload
                {
                    return Ok(o.exec.kv_alloc(kind, n_ctx, kv_dim)?);
                }
                let _ = split;
                Ok(CpuExec.kv_alloc(kind, n_ctx, kv_dim)?)
            };
            k.push(store()?);
            v.push(store()?);
        }
        Ok(KvCache::with_stores(n_ctx, kv_dim, k, v))
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
            let cells_before = cache.len();
            let out = self.forward_ubatch(cache, batch, n, start, len, group, want);
            match out {
                Ok(out) => logits.extend_from_slice(&out),
                Err(e) => {
                    // A failed pass leaves no half-written cells behind.
                    cache.truncate(cells_before);
                    return Err(e);
                }
            }
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

        let mut x = vec![0f32; n * e];
        let mut deepstack = None;
        match batch.input {
            BatchInput::Tokens(t) => {
                cpu::get_rows(&self.w.tok_embd, &t[start..start + n], &mut x)?;
                if let Some(sc) = hp.embed_scale {
                    cpu::scale(&mut x, sc);
                }
            }
            BatchInput::Embeddings(all) => {
                let w = hp.n_embd_inp();
                let rows = &all[start * w..(start + n) * w];
                for i in 0..n {
                    x[i * e..(i + 1) * e].copy_from_slice(&rows[i * w..i * w + e]);
                }
                if hp.n_deepstack > 0 {
                    deepstack = Some((rows, w));
                }
            }
        }

        let (q_rank, k_rank) = mask_positions(cache.cells(), first_cell, mrope);
        let q_group = vec![group; n];
        let k_group: Vec<u32> = cache.cells().iter().map(|c| c.group).collect();
        let u = UbatchCtx {
            n,
            pos: &pos,
            first_cell,
            n_kv,
            q_rank: &q_rank,
            k_rank: &k_rank,
            q_group: &q_group,
            k_group: &k_group,
            deepstack,
        };

        let split = self.first_gpu_layer();
        let x = self.run_layers(&CpuExec, &self.w.layers[..split], 0, x, cache, &u)?;
        #[cfg(feature = "gpu")]
        if let Some(o) = &self.offload {
            let x = o.exec.upload(&x)?;
            let x = self.run_layers(&o.exec, &o.layers, split, x, cache, &u)?;
            return match &o.head {
                Some(h) => self.head(&o.exec, &h.norm, &h.output, x, n, want),
                None => {
                    let x = o.exec.download(x)?;
                    self.head(&CpuExec, &self.w.output_norm, &self.w.output, x, n, want)
                }
            };
        }
        self.head(&CpuExec, &self.w.output_norm, &self.w.output, x, n, want)
    }

    /// Layers `first_il..first_il + layers.len()` on backend `e`.
    fn run_layers<E: Exec>(
        &self,
        e: &E,
        layers: &[LayerWeights<E::Vector>],
        first_il: usize,
        x: E::Act,
        cache: &mut KvCache,
        u: &UbatchCtx<'_>,
    ) -> Result<E::Act> {
        if layers.is_empty() {
            return Ok(x);
        }
        let hp = &self.hp;
        let emb = hp.n_embd;
        let mut s = Scratch::new(e, hp, u.n, x)?;
        for (j, lw) in layers.iter().enumerate() {
            let il = first_il + j;
            self.attention_block(e, cache, lw, il, &mut s, u)?;
            self.ffn_block(e, lw, &mut s, u.n)?;
            if let Some((rows, w)) = u.deepstack
                && il < hp.n_deepstack
            {
                // Deepstack slice il (after the main embedding) joins the output of layer il.
                let mut slice = Vec::with_capacity(u.n * emb);
                for i in 0..u.n {
                    let off = i * w + (il + 1) * emb;
                    slice.extend_from_slice(&rows[off..off + emb]);
                }
                let slice = e.upload(&slice)?;
                e.add(&mut s.x, &slice)?;
            }
        }
        Ok(s.x)
    }

    /// Final norm and LM head over the rows `want` asks for.
    fn head<E: Exec>(
        &self,
        e: &E,
        norm: &E::Vector,
        output: &Tensor,
        x: E::Act,
        n: usize,
        want: Logits,
    ) -> Result<Vec<f32>> {
        let hp = &self.hp;
        let rows: Vec<usize> = match want {
            Logits::None => return Ok(Vec::new()),
            Logits::Last => vec![n - 1],
            Logits::All => (0..n).collect(),
        };
        let mut h = e.gather_rows(&x, hp.n_embd, &rows)?;
        drop(x);
        let mut tmp = e.alloc(0)?;
        e.rms_norm_inplace(&mut h, norm, hp.rms_eps, hp.n_embd, &mut tmp)?;
        let mut logits = e.alloc(rows.len() * self.n_vocab())?;
        e.matmul(output, &h, rows.len(), &mut logits)?;
        if let Some(cap) = hp.final_softcap {
            e.softcap(&mut logits, cap)?;
        }
        Ok(e.download(logits)?)
    }

    fn attention_block<E: Exec>(
        &self,
        e: &E,
        cache: &mut KvCache,
        lw: &LayerWeights<E::Vector>,
        il: usize,
        s: &mut Scratch<E::Act>,
        u: &UbatchCtx<'_>,
    ) -> Result<()> {
        let hp = &self.hp;
        let (emb, hd, n) = (hp.n_embd, hp.head_dim, u.n);
        e.rms_norm(&s.x, &lw.attn_norm, hp.rms_eps, emb, &mut s.h)?;
        e.matmul(&lw.wq, &s.h, n, &mut s.q)?;
        e.matmul(&lw.wk, &s.h, n, &mut s.k)?;
        e.matmul(&lw.wv, &s.h, n, &mut s.v)?;
        if let Some(b) = &lw.bq {
            e.add_rows(&mut s.q, b)?;
        }
        if let Some(b) = &lw.bk {
            e.add_rows(&mut s.k, b)?;
        }
        if let Some(b) = &lw.bv {
            e.add_rows(&mut s.v, b)?;
        }
        if let Some(w) = &lw.q_norm {
            e.rms_norm_inplace(&mut s.q, w, hp.rms_eps, hd, &mut s.tmp)?;
        }
        if let Some(w) = &lw.k_norm {
            e.rms_norm_inplace(&mut s.k, w, hp.rms_eps, hd, &mut s.tmp)?;
        }
        let swa = hp.swa_layers[il];
        let rope = if swa {
            &self.rope_swa
        } else {
            &self.rope_global
        };
        e.rope(&mut s.q, n, hp.n_head, hd, u.pos, rope)?;
        e.rope(&mut s.k, n, hp.n_head_kv, hd, u.pos, rope)?;
        if let Some(sc) = hp.q_prescale {
            e.scale(&mut s.q, sc)?;
        }
        cache.store(e, il, u.first_cell, &s.k, &s.v)?;

        let mask = AttnMask {
            q_pos: u.q_rank,
            k_pos: u.k_rank,
            causal: true,
            window: if swa { hp.n_swa } else { None },
            q_group: Some(u.q_group),
            k_group: Some(u.k_group),
        };
        let params = AttnParams {
            n_head: hp.n_head,
            n_kv_head: hp.n_head_kv,
            head_dim: hd,
            scale: hp.attn_scale,
            softcap: hp.attn_softcap,
        };
        let (kd, vd) = cache.layer(il);
        e.attention(
            &s.q,
            kd,
            vd,
            cache.kv_dim(),
            u.n_kv,
            &mask,
            &params,
            &mut s.attn,
        )?;
        e.matmul(&lw.wo, &s.attn, n, &mut s.o)?;
        if let Some(b) = &lw.bo {
            e.add_rows(&mut s.o, b)?;
        }
        if let Some(w) = &lw.attn_post_norm {
            e.rms_norm_inplace(&mut s.o, w, hp.rms_eps, emb, &mut s.tmp)?;
        }
        e.add(&mut s.x, &s.o)?;
        Ok(())
    }

    fn ffn_block<E: Exec>(
        &self,
        e: &E,
        lw: &LayerWeights<E::Vector>,
        s: &mut Scratch<E::Act>,
        n: usize,
    ) -> Result<()> {
        let hp = &self.hp;
        e.rms_norm(&s.x, &lw.ffn_norm, hp.rms_eps, hp.n_embd, &mut s.h)?;
        e.matmul(&lw.ffn_gate, &s.h, n, &mut s.gate)?;
        e.matmul(&lw.ffn_up, &s.h, n, &mut s.up)?;
        match hp.ffn_act {
            FfnAct::SwiGlu => e.swiglu(&s.gate, &s.up, &mut s.act)?,
            FfnAct::GeGlu => e.geglu_f16_table(&s.gate, &s.up, &mut s.act)?,
        }
        e.matmul(&lw.ffn_down, &s.act, n, &mut s.o)?;
        if let Some(w) = &lw.ffn_post_norm {
            e.rms_norm_inplace(&mut s.o, w, hp.rms_eps, hp.n_embd, &mut s.tmp)?;
        }
        e.add(&mut s.x, &s.o)?;
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
