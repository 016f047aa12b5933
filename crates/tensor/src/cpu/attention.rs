//! Fused attention (flash-style): `softmax(scale · Q·Kᵀ + mask) · V` without materialising
//! the `n_q × n_kv` score matrix.
//!
//! Work is split into tasks of (a block of queries) × (one KV head with the query heads that
//! share it, GQA), so each packed K/V block is reused by up to 64 query rows. Keys are visited
//! in blocks of 64 with an online softmax (running max `m`, running sum `l`, output rescaled
//! when the max grows), as ggml-cpu's tiled flash-attention does: scores are scaled,
//! soft-capped (`c · tanh(s / c)`), masked to `-inf` through an additive bias row, and rows
//! that see no key at all give 0. Blocks no query of a task can see are skipped (causal and
//! sliding-window prefill).
//!
//! Batch invariance: a query row's output is a fixed function of that row, the keys and the
//! mask, whatever else is in the batch. The keys are cut into fixed chunks of
//! [`CHUNK_KEYS`] from key 0; each chunk gets its own online softmax from a fresh state and
//! the chunk states are merged in order (in parallel when there are fewer tasks than threads,
//! as in decode, else one after the other in the task). Every score is one dot product of the
//! query and key rows in the same order (`simd::scores` on a transposed key block) for any
//! number of rows, and the
//! softmax and `P·V` kernels work row by row.

pub mod bf16;
pub mod simd;

use rayon::prelude::*;

use crate::cpu::Isa;
pub use crate::ops::attention::{AttnMask, AttnParams, KvData};

/// Copies `dst.len()` values of `kv` starting at element `start`, converting to f32.
fn copy_kv(kv: KvData, isa: Isa, start: usize, dst: &mut [f32]) {
    let end = start + dst.len();
    match kv {
        KvData::F32(x) => dst.copy_from_slice(&x[start..end]),
        KvData::F16(x) => simd::f16_to_f32(isa, &x[start..end], dst),
    }
}

/// Asks for KV head `g`'s rows `keys` of `kv` (`stride` values apart, `d` long) to be
/// fetched into the cache.
fn prefetch_kv(kv: KvData, keys: std::ops::Range<usize>, stride: usize, g: usize, d: usize) {
    let (bytes, size): (&[u8], usize) = match kv {
        KvData::F32(x) => (bytemuck::cast_slice(x), 4),
        KvData::F16(x) => (bytemuck::cast_slice(x), 2),
    };
    let from = ((keys.start * stride + g * d) * size).min(bytes.len());
    simd::prefetch_rows(&bytes[from..], keys.len(), stride * size, d * size);
}

/// Query rows one task aims at (queries × heads sharing a KV head): enough to amortise
/// packing and transposing each K/V block.
const ROWS_PER_TASK: usize = 128;
/// Fewer tasks than this per thread and tasks shrink, so every core gets work.
const TASKS_PER_THREAD: usize = 4;

/// Keys per block.
const KB: usize = simd::KEYS;
/// Keys per softmax chunk (a multiple of [`KB`]): the unit of the key split, fixed so that
/// the split never depends on the batch or the thread count.
pub const CHUNK_KEYS: usize = 4 * KB;

/// One unit of parallel work: queries `q0..q0 + outs.len()` against KV head `g`.
/// `outs[i]` is the output of query `q0 + i` for the heads of group `g`, `group * d` long.
struct Task<'o> {
    g: usize,
    q0: usize,
    outs: Vec<&'o mut [f32]>,
}

/// Per-thread buffers, reused across tasks.
#[derive(Default)]
struct Scratch {
    /// Packed query rows `[rows_pad, d]`.
    q: Vec<f32>,
    /// Output accumulators `[rows_pad, d]`.
    acc: Vec<f32>,
    /// Scores, then weights `[rows_pad, KB]`.
    s: Vec<f32>,
    /// Transposed key block `[d, KB]`.
    kt: Vec<f32>,
    /// Key block `[KB, d]`, packed before transposing.
    kp: Vec<f32>,
    /// Value block `[KB, d]`.
    v: Vec<f32>,
    /// Additive mask per query of the task `[n_tq, KB]`: 0 or -inf.
    bias: Vec<f32>,
    /// Running max and sum per row.
    m: Vec<f32>,
    l: Vec<f32>,
    /// Weights as bf16 pairs `[rows_pad, KB / 2]` (bf16 `P·V` only).
    p_pairs: Vec<u32>,
}

impl Scratch {
    /// Runs `f` on this thread's scratch, kept across calls: a decode step attends once per
    /// layer, and allocating and clearing the block buffers (~200 KB at head dim 256) each
    /// time cost as much as the attention itself. Taken out while in use, so a nested call
    /// on the same thread (rayon runs other tasks while it waits) gets a fresh one.
    fn with<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
        thread_local! {
            static KEPT: std::cell::Cell<Option<Box<Scratch>>> = const { std::cell::Cell::new(None) };
        }
        let mut sc = KEPT.with(|k| k.take()).unwrap_or_default();
        let r = f(&mut sc);
        KEPT.with(|k| k.set(Some(sc)));
        r
    }
}

fn resize_zeroed(v: &mut Vec<f32>, n: usize) {
    v.clear();
    v.resize(n, 0.0);
}

/// Fused attention: `q` `[n_q, n_head, d]`, `k`/`v` `[n_kv, n_kv_head, d]`, `out`
/// `[n_q, n_head, d]`; `n_q`/`n_kv` are the lengths of the mask's position slices.
///
/// Query head `h` reads KV head `h / (n_head / n_kv_head)`. Memory beyond `out` is
/// O(threads · d · block) plus, when several tasks share a KV head, a packed copy of each
/// head in use (O(n_kv · d) each); never O(n_q · n_kv).
pub fn attention(
    q: &[f32],
    k: KvData,
    v: KvData,
    mask: &AttnMask,
    p: &AttnParams,
    out: &mut [f32],
) {
    attention_with(q, k, v, mask, p, PvPrecision::F32, out)
}

/// The arithmetic of the `P·V` product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvPrecision {
    /// f32 products and sums (every decoder; the encoders by default).
    F32,
    /// Weights and values rounded to bf16, f32 sums, AVX512-BF16 dot products: the encoders'
    /// opt-in bf16 mode (`EncoderPrecision::Bf16`). Used where several query tasks share
    /// each KV head and the CPU has AVX512-BF16; elsewhere f32.
    Bf16,
}

/// [`attention`] with `P·V` in `pv`.
pub fn attention_with(
    q: &[f32],
    k: KvData,
    v: KvData,
    mask: &AttnMask,
    p: &AttnParams,
    pv: PvPrecision,
    out: &mut [f32],
) {
    let (n_q, n_kv, d) = (mask.n_q(), mask.n_kv(), p.head_dim);
    assert!(
        p.n_kv_head > 0 && p.n_head.is_multiple_of(p.n_kv_head),
        "attention: n_head {} is not a multiple of n_kv_head {}",
        p.n_head,
        p.n_kv_head
    );
    assert_eq!(q.len(), n_q * p.n_head * d, "attention: q length");
    assert_eq!(out.len(), n_q * p.n_head * d, "attention: out length");
    assert_eq!(k.len(), n_kv * p.n_kv_head * d, "attention: k length");
    assert_eq!(v.len(), n_kv * p.n_kv_head * d, "attention: v length");
    mask.check();
    if out.is_empty() {
        return;
    }
    // Read on the calling thread: a `cpu::with_isa` cap does not reach rayon's workers.
    let isa = crate::cpu::isa();

    let group = p.n_head / p.n_kv_head;
    let mut q_per_task = (ROWS_PER_TASK / group).max(1);
    let wanted = TASKS_PER_THREAD * rayon::current_num_threads();
    while q_per_task > 4 && n_q.div_ceil(q_per_task) * p.n_kv_head < wanted {
        q_per_task /= 2;
    }
    let n_blocks = n_q.div_ceil(q_per_task);
    // KV-head-major order: consecutive tasks read the same K/V rows while they are cached.
    let mut tasks: Vec<Task> = (0..p.n_kv_head)
        .flat_map(|g| {
            (0..n_blocks).map(move |b| Task {
                g,
                q0: b * q_per_task,
                outs: Vec::with_capacity(q_per_task),
            })
        })
        .collect();
    // Heads sharing KV head g are contiguous within a query's output row.
    for (qi, row) in out.chunks_exact_mut(p.n_head * d).enumerate() {
        for (g, heads) in row.chunks_exact_mut(group * d).enumerate() {
            tasks[g * n_blocks + qi / q_per_task].outs.push(heads);
        }
    }
    // Too few tasks for the threads (decode with few KV heads): run the key chunks in
    // parallel too.
    let parallel_chunks = tasks.len() < rayon::current_num_threads();
    // Several tasks read each KV head (encoders, long prefills): the first task of a head
    // transposes its keys and gathers its values once for all of them (a head's rows lie
    // `n_kv_head · d` apart, so copying them per task and block cost a TLB miss per row);
    // the copy goes when the head's last task ends, so at most a few heads are held.
    let packs = (n_blocks >= 2 && !parallel_chunks).then(|| HeadPacks::new(p.n_kv_head, n_blocks));
    let pv_bf16 = pv == PvPrecision::Bf16 && super::gemm_bf16::available();
    tasks.into_par_iter().for_each(|mut task| {
        Scratch::with(|scratch| {
            let Some(packs) = &packs else {
                run_task(
                    isa,
                    q,
                    k,
                    v,
                    mask,
                    p,
                    &mut task,
                    parallel_chunks,
                    None,
                    scratch,
                );
                return;
            };
            let head = packs.take(task.g, || {
                PackedHead::new(isa, k, v, task.g, n_kv, p, pv_bf16)
            });
            run_task(
                isa,
                q,
                k,
                v,
                mask,
                p,
                &mut task,
                false,
                Some(&head),
                scratch,
            );
            drop(head);
            packs.release(task.g);
        })
    });
}

/// The packed KV heads in use, each shared by the tasks of its head.
struct HeadPacks {
    /// Per KV head: its packed copy while tasks use it, and how many tasks have yet to.
    heads: Vec<std::sync::Mutex<(Option<std::sync::Arc<PackedHead>>, usize)>>,
}

impl HeadPacks {
    fn new(n_kv_head: usize, tasks_per_head: usize) -> Self {
        Self {
            heads: (0..n_kv_head)
                .map(|_| std::sync::Mutex::new((None, tasks_per_head)))
                .collect(),
        }
    }

    /// Head `g`'s packed copy, made by `pack` for the first task that asks.
    fn take(&self, g: usize, pack: impl FnOnce() -> PackedHead) -> std::sync::Arc<PackedHead> {
        let mut slot = self.heads[g].lock().unwrap_or_else(|e| e.into_inner());
        slot.0
            .get_or_insert_with(|| std::sync::Arc::new(pack()))
            .clone()
    }

    /// One task of head `g` is done; the last one frees the copy.
    fn release(&self, g: usize) {
        let mut slot = self.heads[g].lock().unwrap_or_else(|e| e.into_inner());
        slot.1 -= 1;
        if slot.1 == 0 {
            slot.0 = None;
        }
    }
}

/// One KV head's keys and values, laid out as the micro-kernels read them.
struct PackedHead {
    /// Key blocks transposed, `[n_kv / KB][d][KB]` (keys past `n_kv` are 0).
    kt: Vec<f32>,
    /// Value rows `[n_kv][d]` (empty when `v_pairs` is used).
    v: Vec<f32>,
    /// For bf16 `P·V`: values of keys `2i`, `2i + 1` as bf16 pairs, `[n_kv / 2][d]` (a key
    /// past `n_kv` is 0); else empty.
    v_pairs: Vec<u32>,
}

impl PackedHead {
    fn new(
        isa: Isa,
        k: KvData,
        v: KvData,
        g: usize,
        n_kv: usize,
        p: &AttnParams,
        bf16_pairs: bool,
    ) -> Self {
        let d = p.head_dim;
        let stride = p.n_kv_head * d;
        let mut kt = vec![0f32; n_kv.div_ceil(KB) * d * KB];
        let mut rows = vec![0f32; KB * d];
        for (b, block) in kt.chunks_exact_mut(d * KB).enumerate() {
            let (j0, nk) = (b * KB, KB.min(n_kv - b * KB));
            for jj in 0..nk {
                let start = (j0 + jj) * stride + g * d;
                copy_kv(k, isa, start, &mut rows[jj * d..(jj + 1) * d]);
            }
            simd::transpose_keys(isa, &rows, nk, d, block);
        }
        let mut vp = vec![0f32; n_kv * d];
        for (j, row) in vp.chunks_exact_mut(d).enumerate() {
            copy_kv(v, isa, j * stride + g * d, row);
        }
        if !bf16_pairs {
            return Self {
                kt,
                v: vp,
                v_pairs: Vec::new(),
            };
        }
        let mut v_pairs = vec![0u32; n_kv.div_ceil(2) * d];
        let mut both = vec![0f32; 2 * d];
        for (i, dst) in v_pairs.chunks_exact_mut(d).enumerate() {
            for c in 0..d {
                let hi = 2 * i + 1;
                both[2 * c] = vp[2 * i * d + c];
                both[2 * c + 1] = if hi < n_kv { vp[hi * d + c] } else { 0.0 };
            }
            super::gemm_bf16::to_bf16_pairs(&both, dst);
        }
        Self {
            kt,
            v: Vec::new(),
            v_pairs,
        }
    }
}

/// A chunk's softmax state for the rows of one task: running max, sum and unnormalised output.
struct Partial {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
}

impl Partial {
    fn empty(rows: usize, d: usize) -> Self {
        Self {
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            acc: vec![0.0; rows * d],
        }
    }

    /// Folds in the next chunk's state, rescaling both to the common maximum. Merging into an
    /// empty state copies the chunk exactly (factors 0 and 1).
    fn merge(&mut self, m: &[f32], l: &[f32], acc: &[f32], d: usize) {
        for r in 0..self.m.len() {
            if m[r] == f32::NEG_INFINITY {
                continue;
            }
            let mx = self.m[r].max(m[r]);
            let (a, b) = ((self.m[r] - mx).exp(), (m[r] - mx).exp());
            self.l[r] = self.l[r] * a + l[r] * b;
            let dst = &mut self.acc[r * d..(r + 1) * d];
            for (x, y) in dst.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                *x = *x * a + y * b;
            }
            self.m[r] = mx;
        }
    }
}

fn run_task(
    isa: Isa,
    q: &[f32],
    k: KvData,
    v: KvData,
    mask: &AttnMask,
    p: &AttnParams,
    task: &mut Task,
    parallel_chunks: bool,
    packed: Option<&PackedHead>,
    sc: &mut Scratch,
) {
    let (n_kv, d) = (mask.n_kv(), p.head_dim);
    let rows = task.outs.len() * (p.n_head / p.n_kv_head);
    let run = |j: usize, q_packed: bool, sc: &mut Scratch| {
        attend(
            isa,
            q,
            k,
            v,
            mask,
            p,
            task.g,
            task.q0,
            task.outs.len(),
            j..(j + CHUNK_KEYS).min(n_kv),
            packed,
            q_packed,
            sc,
        );
    };
    let mut total = Partial::empty(rows, d);
    if parallel_chunks && n_kv > CHUNK_KEYS {
        let starts: Vec<usize> = (0..n_kv).step_by(CHUNK_KEYS).collect();
        let partials: Vec<Partial> = starts
            .into_par_iter()
            .map(|j| {
                Scratch::with(|sc| {
                    run(j, false, sc);
                    Partial {
                        m: sc.m.clone(),
                        l: sc.l.clone(),
                        acc: sc.acc[..rows * d].to_vec(),
                    }
                })
            })
            .collect();
        for part in &partials {
            total.merge(&part.m, &part.l, &part.acc, d);
        }
    } else {
        for j in (0..n_kv).step_by(CHUNK_KEYS) {
            run(j, j > 0, sc);
            total.merge(&sc.m, &sc.l, &sc.acc[..rows * d], d);
        }
    }
    write_out(task, p, &total.acc, &total.l);
}

/// Normalised output rows into the task's output slices (0 where nothing was visible).
fn write_out(task: &mut Task, p: &AttnParams, acc: &[f32], l: &[f32]) {
    let (d, group) = (p.head_dim, p.n_head / p.n_kv_head);
    for (qi, heads) in task.outs.iter_mut().enumerate() {
        for hi in 0..group {
            let r = qi * group + hi;
            let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
            let dst = &mut heads[hi * d..(hi + 1) * d];
            for (o, a) in dst.iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                *o = a * inv;
            }
        }
    }
}

/// Online softmax of queries `q0..q0 + n_tq` (heads of KV head `g`) over `keys`, leaving the
/// running max, sum and unnormalised output of every row in `sc.m`, `sc.l`, `sc.acc`.
fn attend(
    isa: Isa,
    q: &[f32],
    k: KvData,
    v: KvData,
    mask: &AttnMask,
    p: &AttnParams,
    g: usize,
    q0: usize,
    n_tq: usize,
    keys: std::ops::Range<usize>,
    packed: Option<&PackedHead>,
    q_packed: bool,
    sc: &mut Scratch,
) {
    let d = p.head_dim;
    let group = p.n_head / p.n_kv_head;
    let rows = n_tq * group;
    let rows_pad = rows.next_multiple_of(4);

    // Packed query rows (row = query-in-task * group + head-in-group), zero padding rows;
    // done once per task when its chunks run one after the other on this scratch.
    if !q_packed {
        resize_zeroed(&mut sc.q, rows_pad * d);
        for qi in 0..n_tq {
            let src = ((q0 + qi) * p.n_head + g * group) * d;
            sc.q[qi * group * d..(qi + 1) * group * d].copy_from_slice(&q[src..src + group * d]);
        }
    }
    resize_zeroed(&mut sc.acc, rows_pad * d);
    // Written whole before each read: sized, not cleared (this runs per chunk of keys).
    sc.s.resize(rows_pad * KB, 0.0);
    sc.bias.resize(n_tq * KB, 0.0);
    if packed.is_none() {
        // Written before each read (`kt` cleared below when a block is short).
        sc.kt.resize(d * KB, 0.0);
        sc.kp.resize(KB * d, 0.0);
        sc.v.resize(KB * d, 0.0);
    }
    sc.m.clear();
    sc.m.resize(rows, f32::NEG_INFINITY);
    if packed.is_some_and(|h| !h.v_pairs.is_empty()) {
        sc.p_pairs.clear();
        sc.p_pairs.resize(rows_pad * KB / 2, 0);
    }
    resize_zeroed(&mut sc.l, rows);

    // With a soft cap the scale goes inside the tanh: c · tanh(scale · s / c).
    let cap = p.softcap.filter(|&c| c != 0.0);
    let score_scale = cap.map_or(p.scale, |c| p.scale / c);

    let kv_stride = p.n_kv_head * d;
    if packed.is_none() {
        let first = keys.start..(keys.start + KB).min(keys.end);
        prefetch_kv(k, first.clone(), kv_stride, g, d);
        prefetch_kv(v, first, kv_stride, g, d);
    }
    for j0 in keys.clone().step_by(KB) {
        let nk = KB.min(keys.end - j0);
        if packed.is_none() {
            // The next block's rows arrive while this one is computed.
            let next = (j0 + KB).min(keys.end)..(j0 + 2 * KB).min(keys.end);
            prefetch_kv(k, next.clone(), kv_stride, g, d);
            prefetch_kv(v, next, kv_stride, g, d);
        }
        // A whole block every query sees (all of an encoder's) needs no mask.
        let range = mask.key_range(j0, nk);
        let unmasked = nk == KB && (0..n_tq).all(|qi| mask.sees_all(q0 + qi, range));
        if !unmasked {
            let mut any = false;
            for qi in 0..n_tq {
                let bias = &mut sc.bias[qi * KB..(qi + 1) * KB];
                any |= mask.fill_bias_in(q0 + qi, j0, nk, range, bias);
            }
            if !any {
                continue;
            }
        }
        // Keys across SIMD lanes for any number of rows: every score is one FMA chain over
        // the head dimension in order. (Direct dot products, cheaper for the few rows of a
        // decode step, would sum in another order.) Keys past nk stay 0 in kt: their
        // (masked) scores are finite.
        let kt: &[f32] = match packed {
            Some(h) => &h.kt[j0 / KB * d * KB..(j0 / KB + 1) * d * KB],
            None => {
                // Rows far apart in memory (one KV head of many) are first packed side by
                // side.
                for jj in 0..nk {
                    let start = (j0 + jj) * kv_stride + g * d;
                    copy_kv(k, isa, start, &mut sc.kp[jj * d..(jj + 1) * d]);
                }
                if nk < KB {
                    sc.kt.fill(0.0);
                }
                simd::transpose_keys(isa, &sc.kp, nk, d, &mut sc.kt);
                &sc.kt
            }
        };
        simd::scores(isa, &sc.q, rows_pad, kt, d, &mut sc.s);

        sc.s[rows * KB..rows_pad * KB].fill(0.0);
        let scale = match cap {
            Some(c) => {
                for x in &mut sc.s[..rows * KB] {
                    *x = c * (*x * score_scale).tanh();
                }
                1.0
            }
            None => score_scale,
        };
        simd::softmax_block(
            isa,
            &mut sc.s,
            rows,
            group,
            (!unmasked).then_some(&sc.bias[..]),
            scale,
            &mut sc.m,
            &mut sc.l,
            &mut sc.acc,
            d,
        );

        if let Some(h) = packed.filter(|h| !h.v_pairs.is_empty()) {
            // The weights of keys past nk pair with zero values: make them 0 too.
            for r in 0..rows_pad {
                sc.s[r * KB + nk..(r + 1) * KB].fill(0.0);
                let pairs = &mut sc.p_pairs[r * KB / 2..(r + 1) * KB / 2];
                super::gemm_bf16::to_bf16_pairs(&sc.s[r * KB..(r + 1) * KB], pairs);
            }
            let vp = &h.v_pairs[j0 / 2 * d..(j0 + nk).div_ceil(2) * d];
            bf16::accumulate_bf16(&sc.p_pairs, rows_pad, vp, nk.div_ceil(2), d, &mut sc.acc);
            continue;
        }
        let vb: &[f32] = match packed {
            Some(h) => &h.v[j0 * d..(j0 + nk) * d],
            None => {
                for jj in 0..nk {
                    let start = (j0 + jj) * kv_stride + g * d;
                    copy_kv(v, isa, start, &mut sc.v[jj * d..(jj + 1) * d]);
                }
                &sc.v
            }
        };
        simd::accumulate(isa, &sc.s, rows_pad, vb, d, nk, d, &mut sc.acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_without_visible_keys_are_zero() {
        let (qp, kp) = ([0, 5], [3, 4]);
        let mask = AttnMask::causal(&qp, &kp);
        let p = AttnParams::mha(1, 4);
        let q = [1.0; 8];
        let kv = [0.5; 8];
        let mut out = [9.0; 8];
        attention(&q, KvData::F32(&kv), KvData::F32(&kv), &mask, &p, &mut out);
        assert_eq!(&out[..4], &[0.0; 4]);
        assert!(out[4..].iter().all(|&x| (x - 0.5).abs() < 1e-6));
    }

    #[test]
    fn bf16_values_stay_close_to_f32() {
        if !crate::cpu::gemm_bf16::available() {
            eprintln!("SKIPPED: no AVX512-BF16 on this CPU");
            return;
        }
        // Many queries per head (the packed path), an odd key count, GQA.
        let (n, n_head, n_kv_head, d) = (301, 4, 2, 72);
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        let q: Vec<f32> = (0..n * n_head * d).map(|_| 4.0 * next()).collect();
        let k: Vec<f32> = (0..n * n_kv_head * d).map(|_| next()).collect();
        let v: Vec<f32> = (0..n * n_kv_head * d).map(|_| next()).collect();
        let pos: Vec<i32> = (0..n as i32).collect();
        let mask = AttnMask::full(&pos, &pos);
        let p = AttnParams {
            n_kv_head,
            ..AttnParams::mha(n_head, d)
        };
        let run = |pv| {
            let mut out = vec![f32::NAN; q.len()];
            let (kd, vd) = (KvData::F32(&k), KvData::F32(&v));
            attention_with(&q, kd, vd, &mask, &p, pv, &mut out);
            out
        };
        let (f32_out, bf16_out) = (run(PvPrecision::F32), run(PvPrecision::Bf16));
        let scale = f32_out.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = f32_out
            .iter()
            .zip(&bf16_out)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err <= 1e-2 * scale, "bf16 P·V off by {err} (max {scale})");
        assert!(f32_out != bf16_out, "the bf16 path did not run");
    }

    #[test]
    fn single_key_returns_its_value() {
        let qp = [0, 1, 2];
        let kp = [0];
        let mask = AttnMask::full(&qp, &kp);
        let p = AttnParams {
            n_kv_head: 1,
            ..AttnParams::mha(2, 3)
        };
        let q: Vec<f32> = (0..18).map(|i| i as f32).collect();
        let k = [1.0, 2.0, 3.0];
        let v = [4.0, -5.0, 6.0];
        let mut out = vec![0.0; 18];
        attention(&q, KvData::F32(&k), KvData::F32(&v), &mask, &p, &mut out);
        for row in out.chunks(3) {
            assert_eq!(row, &v);
        }
    }
}
