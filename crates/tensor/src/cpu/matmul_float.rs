//! `matmul`: `out[n, m] = x[n, k] · w[m, k]ᵀ` for f32 / f16 / bf16 weights (quantized weights
//! go to `quant::dot`). Contract and scalar twin in `ops::matmul`.
//!
//! Every batch size runs the same row-dot kernel ([`dot_block`]: register tiles of 4 weight
//! rows x up to 4 x rows, x in L2-resident blocks), so an output's f32 summation order never
//! depends on the batch: a token gets the same bits alone or in a prompt of any size. (A
//! packed GEMM with the weight rows across lanes sums in another order; it was dropped for
//! this invariance.) Decode (n = 1) is bandwidth-bound: each weight row is streamed once.
//!
//! [`matmul_wide`] is the same product for callers that see a whole input at once and need
//! no invariance (the media encoders): above a few rows it runs the blocked, packed GEMM in
//! [`super::gemm`] (f16 / bf16 converted while packing), several times the row-dot speed,
//! or with [`EncoderPrecision::Bf16`] its bf16 twin [`super::gemm_bf16`].
#![allow(unsafe_code)]

use half::{bf16, f16};
use rayon::prelude::*;

pub use super::act::Act;

use super::gemm;
use super::simd::{Isa, Simd, dispatch, isa};
use crate::{DType, Result, Tensor, TensorError};

/// Up to this many activation rows `matmul_wide` streams the weights like `matmul`.
const DOT_MAX_ROWS: usize = 4;

/// Weight elements (m·k) below which the dot path stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// A weight element type the float kernels read directly.
pub(crate) trait WeightElem: bytemuck::Pod + Send + Sync + 'static {
    const ZERO: Self;
    /// `S::LANES` weights from the start of `src`, widened to f32.
    fn load<S: Simd>(s: S, src: &[Self]) -> S::V;
    fn to_f32(self) -> f32;
    /// Fewer than `S::LANES` weights, the other lanes zero.
    #[inline(always)]
    fn load_partial<S: Simd>(s: S, src: &[Self]) -> S::V {
        let mut buf = [Self::ZERO; 16];
        buf[..src.len()].copy_from_slice(src);
        Self::load(s, &buf)
    }
}

impl WeightElem for f32 {
    const ZERO: Self = 0.0;
    #[inline(always)]
    fn load<S: Simd>(s: S, src: &[f32]) -> S::V {
        s.load(src)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl WeightElem for f16 {
    const ZERO: Self = f16::ZERO;
    #[inline(always)]
    fn load<S: Simd>(s: S, src: &[f16]) -> S::V {
        s.load_f16(bytemuck::cast_slice(src))
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

impl WeightElem for bf16 {
    const ZERO: Self = bf16::ZERO;
    #[inline(always)]
    fn load<S: Simd>(s: S, src: &[bf16]) -> S::V {
        s.load_bf16(bytemuck::cast_slice(src))
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
}

/// `out[n, m] = x[n, k] · wᵀ` for a weight `w` of shape `[m, k]` (leading dimensions are
/// flattened into m) in any dtype held on the host.
pub fn matmul(w: &Tensor, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    matmul_with(w, x, n, out, Path::Invariant, Epilogue::default())
}

/// [`matmul`] whose f32 summation order may depend on `n`: the packed GEMM for many rows.
/// For encoders, which always evaluate a whole image or audio window; a decoder needs
/// [`matmul`]'s batch invariance.
pub fn matmul_wide(w: &Tensor, x: &[f32], n: usize, out: &mut [f32]) -> Result<()> {
    matmul_with(w, x, n, out, Path::Wide, Epilogue::default())
}

/// What a linear layer does to its matmul's outputs: `+ bias` per output column, then an
/// activation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub act: Option<Act>,
}

impl Epilogue<'_> {
    fn is_none(&self) -> bool {
        self.bias.is_none() && self.act.is_none()
    }

    /// On `row`, the outputs of columns `j0..j0 + row.len()`, on the calling thread.
    pub(super) fn apply_row(&self, isa: Isa, row: &mut [f32], j0: usize) {
        if let Some(b) = self.bias {
            let b = &b[j0..j0 + row.len()];
            for (x, b) in row.iter_mut().zip(b) {
                *x += b;
            }
        }
        if let Some(act) = self.act {
            super::act::map_chunk(isa, act, row);
        }
    }

    /// On every row of `out` (rows of `m`), as separate passes.
    fn apply_all(&self, out: &mut [f32]) {
        if let Some(b) = self.bias {
            super::add_rows(out, b);
        }
        if let Some(act) = self.act {
            super::act::map(act, out);
        }
    }
}

/// [`matmul_wide`] then `epilogue` (an encoder's linear layer): on the packed GEMM's path the
/// bias and activation are applied to each finished block of rows while it is in cache,
/// instead of two more passes over the output. Values are the same as the separate passes
/// (both are element by element).
pub fn linear_wide(
    w: &Tensor,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    epilogue: Epilogue,
) -> Result<()> {
    let m = out.len().checked_div(n).unwrap_or(0);
    if let Some(b) = epilogue.bias.filter(|b| b.len() != m) {
        return Err(TensorError::ShapeMismatch {
            op: "linear",
            detail: format!("bias of {} values for {m} output columns", b.len()),
        });
    }
    matmul_with(w, x, n, out, Path::Wide, epilogue)
}

/// The arithmetic of [`matmul_wide`] (the media encoders' matmuls) above a few rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderPrecision {
    /// f32 products and sums (weights widened exactly): the default, within the golden
    /// bounds against llama.cpp.
    F32,
    /// Operands rounded to bf16, f32 sums, AVX512-BF16 dot products: twice the arithmetic
    /// per instruction; embeddings move by ~5e-3 of their largest value (measured on the
    /// fixtures; see docs/performance.md). Only where the CPU has AVX512-BF16.
    Bf16,
}

impl std::str::FromStr for EncoderPrecision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!("unknown encoder precision {s:?} (f32 or bf16)")),
        }
    }
}

/// 0: not chosen yet (read `MTMD_ENCODER_PRECISION` on first use), 1: f32, 2: bf16.
static ENCODER_PRECISION: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Whether this CPU can run [`EncoderPrecision::Bf16`].
pub fn bf16_available() -> bool {
    super::gemm_bf16::available()
}

/// Sets the process-wide encoder precision; returns what takes effect (`Bf16` falls back
/// to `F32` on a CPU without AVX512-BF16).
pub fn set_encoder_precision(p: EncoderPrecision) -> EncoderPrecision {
    let p = match p {
        EncoderPrecision::Bf16 if !bf16_available() => EncoderPrecision::F32,
        p => p,
    };
    let code = match p {
        EncoderPrecision::F32 => 1,
        EncoderPrecision::Bf16 => 2,
    };
    ENCODER_PRECISION.store(code, std::sync::atomic::Ordering::Relaxed);
    p
}

/// The encoder precision in effect: what [`set_encoder_precision`] chose, else the
/// environment's `MTMD_ENCODER_PRECISION` (`f32` or `bf16`), else `F32`.
pub fn encoder_precision() -> EncoderPrecision {
    use std::sync::atomic::Ordering::Relaxed;
    match ENCODER_PRECISION.load(Relaxed) {
        1 => EncoderPrecision::F32,
        2 => EncoderPrecision::Bf16,
        _ => {
            let wanted = std::env::var("MTMD_ENCODER_PRECISION")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(EncoderPrecision::F32);
            set_encoder_precision(wanted)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Invariant,
    Wide,
}

fn matmul_with(
    w: &Tensor,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    path: Path,
    epilogue: Epilogue,
) -> Result<()> {
    let k = w.shape().last().copied().unwrap_or(1);
    let m = w.numel().checked_div(k).unwrap_or(0);
    if x.len() != n * k || out.len() != n * m {
        return Err(TensorError::ShapeMismatch {
            op: "matmul",
            detail: format!(
                "weight {:?} ({}) with x of {} values for n = {n} (expected {}) into {} outputs (expected {})",
                w.shape(),
                w.dtype(),
                x.len(),
                n * k,
                out.len(),
                n * m
            ),
        });
    }
    if n == 0 || m == 0 {
        return Ok(());
    }
    if k == 0 {
        out.fill(0.0);
        epilogue.apply_all(out);
        return Ok(());
    }
    let owned;
    let w = if w.is_contiguous() {
        w
    } else {
        owned = w.contiguous()?;
        &owned
    };
    let bytes = w.host_bytes()?;
    let typed =
        |what| TensorError::InvalidView(format!("matmul: {what} weight bytes are misaligned"));
    match w.dtype() {
        DType::F32 => run(
            bytemuck::try_cast_slice::<u8, f32>(bytes).map_err(|_| typed("f32"))?,
            x,
            n,
            k,
            m,
            out,
            path,
            &epilogue,
        ),
        DType::F16 => run(
            bytemuck::try_cast_slice::<u8, f16>(bytes).map_err(|_| typed("f16"))?,
            x,
            n,
            k,
            m,
            out,
            path,
            &epilogue,
        ),
        DType::BF16 => run(
            bytemuck::try_cast_slice::<u8, bf16>(bytes).map_err(|_| typed("bf16"))?,
            x,
            n,
            k,
            m,
            out,
            path,
            &epilogue,
        ),
        d if d.is_quantized() => {
            crate::quant::dot::matmul_quant(w, x, n, out)?;
            epilogue.apply_all(out);
        }
        d => {
            return Err(TensorError::Unsupported {
                op: "matmul",
                dtype: d,
                backend: "cpu",
            });
        }
    }
    Ok(())
}

fn run<T: WeightElem>(
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
    path: Path,
    epilogue: &Epilogue,
) {
    let isa = isa();
    if isa == Isa::Scalar {
        let wf: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
        crate::ops::matmul::reference(&wf, x, n, k, m, out);
    } else if path == Path::Wide && n > DOT_MAX_ROWS {
        if encoder_precision() == EncoderPrecision::Bf16 {
            super::gemm_bf16::gemm_bf16(w, x, n, k, m, out);
        } else {
            let fused = (!epilogue.is_none()).then_some(epilogue);
            gemm::gemm(isa, w, x, n, k, m, out, fused);
            return;
        }
    } else {
        dot_path(isa, w, x, n, k, m, out);
    }
    epilogue.apply_all(out);
}

/// Weight rows split across threads, each streamed once per block of x rows.
fn dot_path<T: WeightElem>(
    isa: Isa,
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
) {
    if n == 1 {
        // out is one row of m: tasks own contiguous pieces of it.
        let rows_per_task = task_rows(m, k);
        if rows_per_task >= m {
            dot_rows_dispatch(isa, w, x, 1, k, 0, out);
        } else {
            out.par_chunks_mut(rows_per_task)
                .enumerate()
                .for_each(|(t, o)| dot_rows_dispatch(isa, w, x, 1, k, t * rows_per_task, o));
        }
        return;
    }
    // n > 1: compute outᵀ [m, n] (contiguous per task), then transpose.
    let mut out_t = vec![0f32; m * n];
    let rows_per_task = task_rows(m, k);
    out_t
        .par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each(|(t, o)| dot_rows_dispatch(isa, w, x, n, k, t * rows_per_task, o));
    for j in 0..m {
        for i in 0..n {
            out[i * m + j] = out_t[j * n + i];
        }
    }
}

/// Weight rows per rayon task: all of them when small, else ~8 tasks per thread.
fn task_rows(m: usize, k: usize) -> usize {
    if m * k < PARALLEL_MIN {
        return m;
    }
    let tasks = 8 * rayon::current_num_threads();
    m.div_ceil(tasks).max(16)
}

fn dot_rows_dispatch<T: WeightElem>(
    isa: Isa,
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    j0: usize,
    out_t: &mut [f32],
) {
    dispatch!(isa, dot_rows, dot_rows_scalar,
        <T: WeightElem> (w: &[T], x: &[f32], n: usize, k: usize, j0: usize, out_t: &mut [f32]))
}

/// Plain loops (the dot path is only chosen with SIMD; this keeps dispatch total).
fn dot_rows_scalar<T: WeightElem>(
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    j0: usize,
    out_t: &mut [f32],
) {
    for (jj, o) in out_t.chunks_exact_mut(n).enumerate() {
        let wr = &w[(j0 + jj) * k..(j0 + jj + 1) * k];
        for (i, oi) in o.iter_mut().enumerate() {
            *oi = wr
                .iter()
                .zip(&x[i * k..(i + 1) * k])
                .map(|(a, b)| a.to_f32() * b)
                .sum();
        }
    }
}

/// `out_t[jj * n + i] = dot(w[j0 + jj], x[i])` for every weight row of this task.
#[inline(always)]
fn dot_rows<S: Simd, T: WeightElem>(
    s: S,
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    j0: usize,
    out_t: &mut [f32],
) {
    dot_rows_all::<S, T>(s, w, x, n, k, j0, out_t)
}

/// Weight rows handled together: each x vector load feeds `WEIGHT_ROWS` FMAs, and as many
/// weight streams are in flight.
const WEIGHT_ROWS: usize = 4;
/// x rows per pass over a task's weight rows: a block of x stays in L2 while every group of
/// weight rows (in L1) sweeps over it.
const X_BLOCK: usize = 64;

#[inline(always)]
fn dot_rows_all<S: Simd, T: WeightElem>(
    s: S,
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    j0: usize,
    out_t: &mut [f32],
) {
    let rows = out_t.len() / n;
    for xb in (0..n).step_by(X_BLOCK) {
        let xe = (xb + X_BLOCK).min(n);
        let mut jj = 0;
        while jj < rows {
            let grouped = rows - jj >= WEIGHT_ROWS;
            let o = &mut out_t[jj * n..];
            let mut i = xb;
            while i < xe {
                let nc = (xe - i).min(4);
                macro_rules! block {
                    ($r:literal) => {
                        match nc {
                            1 => dot_block::<S, T, 1, $r>(s, w, x, k, j0 + jj, i, n, o),
                            2 => dot_block::<S, T, 2, $r>(s, w, x, k, j0 + jj, i, n, o),
                            3 => dot_block::<S, T, 3, $r>(s, w, x, k, j0 + jj, i, n, o),
                            _ => dot_block::<S, T, 4, $r>(s, w, x, k, j0 + jj, i, n, o),
                        }
                    };
                }
                if grouped {
                    block!(4)
                } else {
                    block!(1)
                }
                i += nc;
            }
            jj += if grouped { WEIGHT_ROWS } else { 1 };
        }
    }
}

/// `o[r * stride + i0 + i] = dot(w[j + r], x[i0 + i])` for `R` weight rows and `N` x rows.
///
/// The numeric contract of the float matmul: one accumulator vector per output, lane `t`
/// summing `w[p] * x[p]` for `p = t mod LANES` in order with FMAs (the partial last vector
/// zero-padded), then `reduce_sum`. It does not depend on `N`, `R` or the batch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn dot_block<S: Simd, T: WeightElem, const N: usize, const R: usize>(
    s: S,
    w: &[T],
    x: &[f32],
    k: usize,
    j: usize,
    i0: usize,
    stride: usize,
    o: &mut [f32],
) {
    let l = S::LANES;
    let full = k - k % l;
    let ws: [&[T]; R] = std::array::from_fn(|r| &w[(j + r) * k..(j + r + 1) * k]);
    let xs: [&[f32]; N] = std::array::from_fn(|i| &x[(i0 + i) * k..(i0 + i + 1) * k]);
    let mut acc = [[s.zero(); N]; R];
    let mut p = 0;
    while p < full {
        let xv: [S::V; N] = std::array::from_fn(|i| s.load(&xs[i][p..]));
        for r in 0..R {
            let wv = T::load(s, &ws[r][p..]);
            for i in 0..N {
                acc[r][i] = s.fma(wv, xv[i], acc[r][i]);
            }
        }
        p += l;
    }
    if full < k {
        let xv: [S::V; N] = std::array::from_fn(|i| s.load_partial(&xs[i][full..]));
        for r in 0..R {
            let wv = T::load_partial(s, &ws[r][full..]);
            for i in 0..N {
                acc[r][i] = s.fma(wv, xv[i], acc[r][i]);
            }
        }
    }
    for r in 0..R {
        for i in 0..N {
            o[r * stride + i0 + i] = s.reduce_sum(acc[r][i]);
        }
    }
}
