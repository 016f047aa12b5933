//! The shared decoder: one layer implementation for every architecture, with the
//! per-architecture differences taken from [`HParams`] and the optional weights.
//!
//! The layer code is written once against [`Exec`]: layers `0..first_gpu_layer` run on the
//! CPU, the rest (and the output head, when offloaded) on a GPU ([`crate::offload`]).

use crate::batch::{Batch, BatchInput, Logits};
use crate::error::{LlmError, Result};
use crate::hparams::{FfnAct, HParams};
use crate::kv_cache::{CellPos, KvCache, KvType, RopedKeys};
use crate::weights::{LayerWeights, Weights};
use tensor::Tensor;
use tensor::cpu;
use tensor::exec::{CpuExec, Exec, Projection};
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

/// One sequence's rows of a ubatch: where its cells go and its mask inputs.
struct SeqCtx {
    /// Rows of the ubatch that belong to this sequence.
    rows: std::ops::Range<usize>,
    first_cell: usize,
    n_kv: usize,
    q_rank: Vec<i32>,
    k_rank: Vec<i32>,
    q_group: Vec<u32>,
    k_group: Vec<u32>,
}

/// What every layer of one ubatch shares: positions, and per sequence the mask's inputs and
/// where its cells go.
struct UbatchCtx<'a> {
    n: usize,
    pos: &'a [i32],
    seqs: Vec<SeqCtx>,
    /// Media rows with their deepstack slices (Qwen3-VL), and the row width.
    deepstack: Option<(&'a [f32], usize)>,
}

/// One sequence's batch in a multi-sequence step ([`Decoder::decode_many`]): its own KV
/// cache, positions and mask; the weights are read once for all of them.
pub struct SeqBatch<'a, 'c> {
    pub cache: &'c mut KvCache,
    pub batch: Batch<'a>,
}

/// The rows `start..start + len` of a batch that one forward pass evaluates.
struct Part<'a, 'b> {
    batch: &'b Batch<'a>,
    n_total: usize,
    start: usize,
    len: usize,
    group: u32,
    want: Logits,
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
            let part = Part {
                batch,
                n_total: n,
                start,
                len,
                group,
                want,
            };
            let out = self
                .forward(&mut [&mut *cache], &[part])
                .map(|mut v| v.pop().unwrap_or_default());
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

    /// Runs one step for several sequences at once: every batch's rows go through each
    /// weight matrix together, while each sequence attends only to its own cache. Returns
    /// the logits of each sequence, as [`Decoder::decode`] would. Steps larger than
    /// [`MAX_UBATCH`] rows in all are run sequence by sequence. On error, no sequence keeps
    /// cells of this step.
    pub fn decode_many(&self, seqs: &mut [SeqBatch<'_, '_>]) -> Result<Vec<Vec<f32>>> {
        let mut lens = Vec::with_capacity(seqs.len());
        for s in seqs.iter() {
            lens.push(self.batch_len(&s.batch)?);
        }
        if seqs.len() == 1 || lens.iter().sum::<usize>() > MAX_UBATCH {
            let mut out = Vec::with_capacity(seqs.len());
            for (i, s) in seqs.iter_mut().enumerate() {
                match self.decode(s.cache, &s.batch) {
                    Ok(l) => out.push(l),
                    Err(e) => {
                        // Undo the sequences that already went through.
                        for (s, n) in seqs[..i].iter_mut().zip(&lens) {
                            let len = s.cache.len();
                            s.cache.truncate(len - n);
                        }
                        return Err(e);
                    }
                }
            }
            return Ok(out);
        }
        let before: Vec<usize> = seqs.iter().map(|s| s.cache.len()).collect();
        let mut caches: Vec<&mut KvCache> = Vec::with_capacity(seqs.len());
        let mut parts = Vec::with_capacity(seqs.len());
        for (s, &n) in seqs.iter_mut().zip(&lens) {
            let SeqBatch { cache, batch } = s;
            let group = if batch.non_causal {
                cache.new_group()
            } else {
                0
            };
            caches.push(&mut **cache);
            parts.push(Part {
                batch: &*batch,
                n_total: n,
                start: 0,
                len: n,
                group,
                want: batch.logits,
            });
        }
        let out = self.forward(&mut caches, &parts);
        if out.is_err() {
            for (c, &n) in caches.iter_mut().zip(&before) {
                c.truncate(n);
            }
        }
        out
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

    /// One forward pass over the parts' rows, concatenated in order; `caches[i]` holds
    /// part i's sequence. Returns each part's logits. Runs on a compute-pool thread
    /// ([`tensor::cpu::on_compute_pool`]) when any layer is on the CPU.
    fn forward(
        &self,
        caches: &mut [&mut KvCache],
        parts: &[Part<'_, '_>],
    ) -> Result<Vec<Vec<f32>>> {
        if self.first_gpu_layer() == 0 {
            // The GPU does the work: spinning CPU workers would only take cores from the
            // driver (or from lavapipe, which is the CPU).
            return self.forward_here(caches, parts);
        }
        tensor::cpu::on_compute_pool(|| self.forward_here(caches, parts))
    }

    fn forward_here(
        &self,
        caches: &mut [&mut KvCache],
        parts: &[Part<'_, '_>],
    ) -> Result<Vec<Vec<f32>>> {
        let hp = &self.hp;
        let e = hp.n_embd;
        let mrope = hp.arch.uses_mrope();
        let comp = self.n_pos_comp();
        let n: usize = parts.iter().map(|p| p.len).sum();
        let part_pos: Vec<Vec<i32>> = parts
            .iter()
            .map(|p| self.ubatch_positions(p.batch, p.n_total, p.start, p.len))
            .collect();
        // Rope wants every component's block over all rows: [t.., y.., x.., e..].
        let mut pos = Vec::with_capacity(n * comp);
        for c in 0..comp {
            for (p, pp) in parts.iter().zip(&part_pos) {
                pos.extend_from_slice(&pp[c * p.len..(c + 1) * p.len]);
            }
        }

        let mut seqs = Vec::with_capacity(parts.len());
        let mut row = 0;
        for ((p, pp), cache) in parts.iter().zip(&part_pos).zip(caches.iter_mut()) {
            let len = p.len;
            let cells: Vec<CellPos> = (0..len)
                .map(|i| CellPos {
                    t: pp[i],
                    y: if mrope { pp[len + i] } else { 0 },
                    x: if mrope { pp[2 * len + i] } else { 0 },
                    group: p.group,
                })
                .collect();
            let first_cell = cache.len();
            // On error the callers truncate every cache to where it was.
            cache.push_cells(cells)?;
            let (q_rank, k_rank) = mask_positions(cache.cells(), first_cell, mrope);
            seqs.push(SeqCtx {
                rows: row..row + len,
                first_cell,
                n_kv: cache.len(),
                q_rank,
                k_rank,
                q_group: vec![p.group; len],
                k_group: cache.cells().iter().map(|c| c.group).collect(),
            });
            row += len;
        }

        let mut x = vec![0f32; n * e];
        let mut deepstack_rows: Option<Vec<f32>> = None;
        let ds_width = hp.n_embd_inp();
        for (p, sq) in parts.iter().zip(&seqs) {
            let xs = &mut x[sq.rows.start * e..sq.rows.end * e];
            match p.batch.input {
                BatchInput::Tokens(t) => {
                    cpu::get_rows(&self.w.tok_embd, &t[p.start..p.start + p.len], xs)?;
                    if let Some(sc) = hp.embed_scale {
                        cpu::scale(xs, sc);
                    }
                }
                BatchInput::Embeddings(all) => {
                    let w = ds_width;
                    let rows = &all[p.start * w..(p.start + p.len) * w];
                    for i in 0..p.len {
                        xs[i * e..(i + 1) * e].copy_from_slice(&rows[i * w..i * w + e]);
                    }
                    if hp.n_deepstack > 0 {
                        // Text rows of other parts add nothing: zeros.
                        let d = deepstack_rows.get_or_insert_with(|| vec![0f32; n * w]);
                        d[sq.rows.start * w..sq.rows.end * w].copy_from_slice(rows);
                    }
                }
            }
        }
        let u = UbatchCtx {
            n,
            pos: &pos,
            seqs,
            deepstack: deepstack_rows.as_deref().map(|r| (r, ds_width)),
        };
        // Logit rows, in order, and how many belong to each part.
        let mut rows = Vec::new();
        let mut counts = Vec::with_capacity(parts.len());
        for (p, sq) in parts.iter().zip(&u.seqs) {
            let before = rows.len();
            match p.want {
                Logits::None => {}
                Logits::Last => rows.push(sq.rows.end - 1),
                Logits::All => rows.extend(sq.rows.clone()),
            }
            counts.push(rows.len() - before);
        }

        let split = self.first_gpu_layer();
        let x = self.run_layers(&CpuExec, &self.w.layers[..split], 0, x, caches, &u)?;
        let logits = 'head: {
            #[cfg(feature = "gpu")]
            if let Some(o) = &self.offload {
                let x = o.exec.upload(&x)?;
                let x = self.run_layers(&o.exec, &o.layers, split, x, caches, &u)?;
                let logits = match &o.head {
                    Some(h) => self.head(&o.exec, &h.norm, &h.output, x, &rows)?,
                    None => {
                        let x = o.exec.download(x)?;
                        self.head(&CpuExec, &self.w.output_norm, &self.w.output, x, &rows)?
                    }
                };
                // A step without logits (a prompt piece) leaves its KV writes recorded:
                // send them now rather than with the next step.
                o.exec.context().flush()?;
                break 'head logits;
            }
            self.head(&CpuExec, &self.w.output_norm, &self.w.output, x, &rows)?
        };
        let n_vocab = self.n_vocab();
        let mut out = Vec::with_capacity(parts.len());
        let mut off = 0;
        for c in counts {
            out.push(logits[off * n_vocab..(off + c) * n_vocab].to_vec());
            off += c;
        }
        Ok(out)
    }

    /// Layers `first_il..first_il + layers.len()` on backend `e`.
    fn run_layers<E: Exec>(
        &self,
        e: &E,
        layers: &[LayerWeights<E::Vector>],
        first_il: usize,
        x: E::Act,
        caches: &mut [&mut KvCache],
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
            self.attention_block(e, caches, lw, il, &mut s, u)?;
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

    /// Final norm and LM head over `rows` of `x`.
    fn head<E: Exec>(
        &self,
        e: &E,
        norm: &E::Vector,
        output: &Tensor,
        x: E::Act,
        rows: &[usize],
    ) -> Result<Vec<f32>> {
        let hp = &self.hp;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut h = e.gather_rows(&x, hp.n_embd, rows)?;
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
        caches: &mut [&mut KvCache],
        lw: &LayerWeights<E::Vector>,
        il: usize,
        s: &mut Scratch<E::Act>,
        u: &UbatchCtx<'_>,
    ) -> Result<()> {
        let hp = &self.hp;
        let (emb, hd, n) = (hp.n_embd, hp.head_dim, u.n);
        e.rms_norm(&s.x, &lw.attn_norm, hp.rms_eps, emb, &mut s.h)?;
        e.matmul_bias_many(
            &mut [
                Projection {
                    w: &lw.wq,
                    b: lw.bq.as_ref(),
                    out: &mut s.q,
                },
                Projection {
                    w: &lw.wk,
                    b: lw.bk.as_ref(),
                    out: &mut s.k,
                },
                Projection {
                    w: &lw.wv,
                    b: lw.bv.as_ref(),
                    out: &mut s.v,
                },
            ],
            &s.h,
            n,
        )?;
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
        let single = u.seqs.len() == 1;
        // One sequence: its keys are roped on their way into the cache (one kernel on a GPU).
        if !single {
            e.rope(&mut s.k, n, hp.n_head_kv, hd, u.pos, rope)?;
        }
        if let Some(sc) = hp.q_prescale {
            e.scale(&mut s.q, sc)?;
        }
        let params = AttnParams {
            n_head: hp.n_head,
            n_kv_head: hp.n_head_kv,
            head_dim: hd,
            scale: hp.attn_scale,
            softcap: hp.attn_softcap,
        };
        let window = if swa { hp.n_swa } else { None };
        for (sq, cache) in u.seqs.iter().zip(caches.iter_mut()) {
            let mask = AttnMask {
                q_pos: &sq.q_rank,
                k_pos: &sq.k_rank,
                causal: true,
                window,
                q_group: Some(&sq.q_group),
                k_group: Some(&sq.k_group),
            };
            if single {
                let keys = RopedKeys {
                    rows: &mut s.k,
                    heads: hp.n_head_kv,
                    head_dim: hd,
                    pos: u.pos,
                    rope,
                };
                cache.store_roped(e, il, sq.first_cell, keys, &s.v)?;
                let (kd, vd) = cache.layer(il);
                e.attention(
                    &s.q,
                    kd,
                    vd,
                    cache.kv_dim(),
                    sq.n_kv,
                    &mask,
                    &params,
                    &mut s.attn,
                )?;
                continue;
            }
            // Several sequences: each one's rows meet only its own cache.
            let rows: Vec<usize> = sq.rows.clone().collect();
            let k = e.gather_rows(&s.k, hp.kv_dim(), &rows)?;
            let v = e.gather_rows(&s.v, hp.kv_dim(), &rows)?;
            cache.store(e, il, sq.first_cell, &k, &v)?;
            let q = e.gather_rows(&s.q, hp.q_dim(), &rows)?;
            let mut out = e.alloc(rows.len() * hp.q_dim())?;
            let (kd, vd) = cache.layer(il);
            e.attention(
                &q,
                kd,
                vd,
                cache.kv_dim(),
                sq.n_kv,
                &mask,
                &params,
                &mut out,
            )?;
            e.copy_rows(&mut s.attn, hp.q_dim(), sq.rows.start, &out)?;
        }
        e.matmul_bias(&lw.wo, lw.bo.as_ref(), &s.attn, n, &mut s.o)?;
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
        e.matmul_bias_many(
            &mut [
                Projection {
                    w: &lw.ffn_gate,
                    b: None,
                    out: &mut s.gate,
                },
                Projection {
                    w: &lw.ffn_up,
                    b: None,
                    out: &mut s.up,
                },
            ],
            &s.h,
            n,
        )?;
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
