//! [`Exec`] on the CPU: the SIMD kernels on slices, writing into the caller's scratch.

use half::f16;

use super::{Exec, KvStore, KvType, Projection, Unary};
use crate::cpu;
use crate::ops::attention::{AttnMask, AttnParams, KvData};
use crate::ops::conv::Conv2dParams;
use crate::ops::rope::RopeConfig;
use crate::{Result, Tensor, TensorError};

/// Wide intermediates up to this size are computed whole ([`Exec::chunk_rows`]): chunks are
/// for memory, and below this the saving is small. Measured (2 threads, interleaved runs): a
/// Whisper encode (1500 frames, 30 MB hidden layer) took 7.2–7.6 s chunked and 6.8–7.4 s
/// whole, a Gemma 3 4B one (4096 patches, 70 MB) 19.7–19.8 s chunked and 20.4–21.0 s whole.
const WIDE_WHOLE_MAX_BYTES: usize = 64 << 20;
/// Bytes of a larger intermediate computed at a time: the 4096-patch SigLIP feed-forward in
/// 5 chunks, so its hidden layer takes 16 MB, not 70, and stays in the last-level cache from
/// the GEMM that writes it to the one that reads it (32 MiB chunks: SmolVLM's encode ~2%
/// slower in interleaved runs).
const WIDE_CHUNK_BYTES: usize = 16 << 20;
/// Fewest rows in a chunk: far above the row count where the matmul leaves the GEMM for its
/// row-dot path (whose rounding differs), and enough rows for the GEMM's blocking.
const WIDE_CHUNK_MIN_ROWS: usize = 256;

/// The CPU backend (threads from rayon's global pool).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuExec;

fn gpu_store(op: &'static str) -> TensorError {
    TensorError::Unsupported {
        op,
        dtype: crate::DType::F32,
        backend: "cpu (the cache lives on a GPU)",
    }
}

/// Up to this many input rows (a decode step of a few sequences) the projections of
/// [`Exec::matmul_bias_many`] run concurrently.
const CONCURRENT_PROJECTION_ROWS: usize = 16;

fn shape(op: &'static str, detail: String) -> TensorError {
    TensorError::ShapeMismatch { op, detail }
}

impl Exec for CpuExec {
    type Act = Vec<f32>;
    type Vector = Vec<f32>;

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn chunk_rows(&self, rows: usize, row_bytes: usize) -> Option<usize> {
        if rows.saturating_mul(row_bytes) <= WIDE_WHOLE_MAX_BYTES {
            return None;
        }
        Some((WIDE_CHUNK_BYTES / row_bytes.max(1)).max(WIDE_CHUNK_MIN_ROWS))
    }

    fn download(&self, x: Vec<f32>) -> Result<Vec<f32>> {
        Ok(x)
    }

    fn upload_owned(&self, data: Vec<f32>) -> Result<Vec<f32>> {
        Ok(data)
    }

    fn layer_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: Option<&Vec<f32>>,
        eps: f32,
        cols: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.resize(x.len(), 0.0);
        cpu::layer_norm(x, Some(w), b.map(|b| b.as_slice()), eps, cols, out);
        Ok(())
    }

    fn unary(&self, op: Unary, x: &mut Vec<f32>) -> Result<()> {
        cpu::act::map(op.into(), x);
        Ok(())
    }

    fn mul(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<()> {
        cpu::mul(x, y);
        Ok(())
    }

    fn attention_spans(
        &self,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        n: usize,
        spans: &[std::ops::Range<usize>],
        params: &AttnParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let d = q.len() / n.max(1);
        out.resize(q.len(), 0.0);
        // The encoders' bf16 mode covers P·V too (QKᵀ stays f32: score errors grow through
        // the exponential).
        let pv = match cpu::encoder_precision() {
            cpu::EncoderPrecision::F32 => cpu::PvPrecision::F32,
            cpu::EncoderPrecision::Bf16 => cpu::PvPrecision::Bf16,
        };
        // Each span on its own: the work is the sum of the spans' squares, not n².
        for r in spans {
            let span = r.start * d..r.end * d;
            let pos: Vec<i32> = (0..r.len() as i32).collect();
            cpu::attention_with(
                &q[span.clone()],
                KvData::F32(&k[span.clone()]),
                KvData::F32(&v[span.clone()]),
                &AttnMask::full(&pos, &pos),
                params,
                pv,
                &mut out[span],
            );
        }
        Ok(())
    }

    fn vector(&self, data: &[f32]) -> Result<Vec<f32>> {
        Ok(data.to_vec())
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        cols: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        out.resize(x.len(), 0.0);
        cpu::rms_norm(x, Some(w), eps, cols, out);
        Ok(())
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Vec<f32>,
        w: &Vec<f32>,
        eps: f32,
        cols: usize,
        tmp: &mut Vec<f32>,
    ) -> Result<()> {
        tmp.resize(x.len(), 0.0);
        cpu::rms_norm(x, Some(w), eps, cols, tmp);
        x.copy_from_slice(tmp);
        Ok(())
    }

    fn matmul(&self, w: &Tensor, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        cpu::matmul(w, x, n, out)
    }

    fn matmul_bias_many(
        &self,
        projections: &mut [Projection<'_, Vec<f32>, Vec<f32>>],
        x: &Vec<f32>,
        n: usize,
    ) -> Result<()> {
        if n > CONCURRENT_PROJECTION_ROWS {
            // Prefill: each GEMM already fills the pool for long; one at a time keeps one
            // packed input in the caches and in memory.
            for p in projections.iter_mut() {
                self.matmul_bias(p.w, p.b, x, n, p.out)?;
            }
            return Ok(());
        }
        // Each projection splits its rows over the pool as it would alone; spawned together,
        // a thread that finishes its part of one moves on to the next instead of waiting.
        let mut results: Vec<Result<()>> = projections.iter().map(|_| Ok(())).collect();
        rayon::scope(|s| {
            for (p, r) in projections.iter_mut().zip(results.iter_mut()) {
                s.spawn(move |_| {
                    *r = cpu::matmul(p.w, x, n, p.out).map(|()| {
                        if let Some(b) = p.b {
                            cpu::add_rows(p.out, b);
                        }
                    })
                });
            }
        });
        results.into_iter().collect()
    }

    fn matmul_wide(&self, w: &Tensor, x: &Vec<f32>, n: usize, out: &mut Vec<f32>) -> Result<()> {
        cpu::matmul_wide(w, x, n, out)
    }

    fn linear(
        &self,
        w: &Tensor,
        b: Option<&Vec<f32>>,
        act: Option<Unary>,
        x: &Vec<f32>,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        // Bias and activation in the GEMM's epilogue, on rows still in cache.
        let epilogue = cpu::Epilogue {
            bias: b.map(|b| b.as_slice()),
            act: act.map(Into::into),
        };
        cpu::linear_wide(w, x, n, out, epilogue)
    }

    fn add_rows(&self, x: &mut Vec<f32>, b: &Vec<f32>) -> Result<()> {
        cpu::add_rows(x, b);
        Ok(())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>) -> Result<()> {
        cpu::add(x, y);
        Ok(())
    }

    fn scale(&self, x: &mut Vec<f32>, s: f32) -> Result<()> {
        cpu::scale(x, s);
        Ok(())
    }

    fn softcap(&self, x: &mut Vec<f32>, cap: f32) -> Result<()> {
        for v in x.iter_mut() {
            *v = (*v / cap).tanh() * cap;
        }
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Vec<f32>,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos: &[i32],
        cfg: &RopeConfig,
    ) -> Result<()> {
        cpu::rope(x, n, heads, head_dim, pos, cfg);
        Ok(())
    }

    fn swiglu(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        cpu::swiglu(gate, up, out);
        Ok(())
    }

    fn geglu_f16_table(&self, gate: &Vec<f32>, up: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        cpu::geglu_f16_table(gate, up, out);
        Ok(())
    }

    fn im2col(
        &self,
        x: &Vec<f32>,
        [c, h, w]: [usize; 3],
        [kh, kw]: [usize; 2],
        p: &Conv2dParams,
    ) -> Result<Vec<f32>> {
        let Some([oh, ow]) = p.out_size(h, w, kh, kw).filter(|_| x.len() == c * h * w) else {
            return Err(shape(
                "im2col",
                format!(
                    "{} values as [{c}, {h}, {w}] under a {kh}x{kw} kernel, {p:?}",
                    x.len()
                ),
            ));
        };
        let mut out = vec![0f32; oh * ow * c * kh * kw];
        cpu::conv::im2col_2d(x, [c, h, w], [kh, kw], p, ow, 0, &mut out);
        Ok(out)
    }

    fn pool_avg_grid(
        &self,
        x: &Vec<f32>,
        [h, w, d]: [usize; 3],
        [kh, kw]: [usize; 2],
    ) -> Result<Vec<f32>> {
        let fits = kh > 0 && kw > 0 && h.is_multiple_of(kh) && w.is_multiple_of(kw);
        if x.len() != h * w * d || !fits {
            return Err(shape(
                "pool_avg_grid",
                format!(
                    "{} values as a {h}x{w} grid of {d}, {kh}x{kw} blocks",
                    x.len()
                ),
            ));
        }
        let mut out = vec![0f32; x.len() / (kh * kw)];
        cpu::grid::pool_avg(x, [h, w, d], [kh, kw], &mut out);
        Ok(out)
    }

    fn transpose(&self, x: &Vec<f32>, rows: usize, cols: usize) -> Result<Vec<f32>> {
        if x.len() != rows * cols {
            return Err(shape(
                "transpose",
                format!("{} values as [{rows}, {cols}]", x.len()),
            ));
        }
        let mut out = vec![0f32; x.len()];
        cpu::transpose(x, rows, cols, &mut out);
        Ok(out)
    }

    fn round_f16(&self, x: &mut Vec<f32>) -> Result<()> {
        for v in x.iter_mut() {
            *v = f16::from_f32(*v).to_f32();
        }
        Ok(())
    }

    fn unfold_grid(&self, x: &Vec<f32>, [h, w, d]: [usize; 3], k: usize) -> Result<Vec<f32>> {
        if x.len() != h * w * d || k == 0 || !h.is_multiple_of(k) || !w.is_multiple_of(k) {
            return Err(shape(
                "unfold_grid",
                format!(
                    "{} values as a {h}x{w} grid of {d}, {k}x{k} blocks",
                    x.len()
                ),
            ));
        }
        let mut out = vec![0f32; x.len()];
        cpu::grid::unfold(x, [h, w, d], k, &mut out);
        Ok(out)
    }

    fn rope_2d(
        &self,
        x: &mut Vec<f32>,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos_a: &[i32],
        pos_b: &[i32],
        base: f32,
        interleave_freq: bool,
    ) -> Result<()> {
        if !head_dim.is_multiple_of(4)
            || x.len() != n * heads * head_dim
            || pos_a.len() != n
            || pos_b.len() != n
        {
            return Err(shape(
                "rope_2d",
                format!(
                    "{} values as [{n}, {heads}, {head_dim}] (head_dim a multiple of 4), {} and {} positions",
                    x.len(),
                    pos_a.len(),
                    pos_b.len()
                ),
            ));
        }
        cpu::rope_2d(x, n, heads, head_dim, pos_a, pos_b, base, interleave_freq);
        Ok(())
    }

    fn resize_bilinear_grid(
        &self,
        x: &Vec<f32>,
        [h, w, d]: [usize; 3],
        [oh, ow]: [usize; 2],
    ) -> Result<Vec<f32>> {
        if x.len() != h * w * d || h == 0 || w == 0 {
            return Err(shape(
                "resize_bilinear_grid",
                format!("{} values as a {h}x{w} grid of {d}", x.len()),
            ));
        }
        let mut out = vec![0f32; oh * ow * d];
        cpu::grid::resize_bilinear(x, [h, w, d], [oh, ow], &mut out);
        Ok(out)
    }

    fn gather_rows(&self, x: &Vec<f32>, cols: usize, rows: &[usize]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * cols);
        for &r in rows {
            out.extend_from_slice(&x[r * cols..(r + 1) * cols]);
        }
        Ok(out)
    }

    fn copy_rows(
        &self,
        dst: &mut Vec<f32>,
        cols: usize,
        first: usize,
        src: &Vec<f32>,
    ) -> Result<()> {
        let start = first * cols;
        match dst.get_mut(start..start + src.len()) {
            Some(d) if src.len().is_multiple_of(cols.max(1)) => {
                d.copy_from_slice(src);
                Ok(())
            }
            _ => Err(TensorError::ShapeMismatch {
                op: "copy_rows",
                detail: format!(
                    "{} values as rows of {cols} at row {first} of {} values",
                    src.len(),
                    dst.len()
                ),
            }),
        }
    }

    fn kv_alloc(&self, kind: KvType, rows: usize, width: usize) -> Result<KvStore> {
        Ok(KvStore::host(kind, rows * width))
    }

    fn kv_write(
        &self,
        kv: &mut KvStore,
        width: usize,
        first: usize,
        rows: &Vec<f32>,
    ) -> Result<()> {
        let at = first * width;
        let end = at + rows.len();
        match kv {
            KvStore::F32(d) => {
                if d.len() < end {
                    d.resize(end, 0.0);
                }
                d[at..end].copy_from_slice(rows)
            }
            KvStore::F16(d) => {
                if d.len() < end {
                    d.resize(end, f16::ZERO);
                }
                for (o, &v) in d[at..end].iter_mut().zip(rows) {
                    *o = f16::from_f32(v);
                }
            }
            #[cfg(feature = "gpu")]
            KvStore::Gpu(_) => return Err(gpu_store("kv_write")),
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        k: &KvStore,
        v: &KvStore,
        width: usize,
        n_kv: usize,
        mask: &AttnMask<'_>,
        params: &AttnParams,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let len = n_kv * width;
        let (Some(kd), Some(vd)) = (k.host_view(len), v.host_view(len)) else {
            return Err(gpu_store("attention"));
        };
        cpu::attention(q, kd, vd, mask, params, out);
        Ok(())
    }
}

impl From<Unary> for cpu::Act {
    fn from(op: Unary) -> Self {
        match op {
            Unary::GeluTanh => Self::GeluTanh,
            Unary::GeluErf => Self::GeluErf,
            Unary::GeluQuick => Self::GeluQuick,
            Unary::Silu => Self::Silu,
        }
    }
}
