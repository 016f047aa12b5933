//! The backend-neutral op interface that model graphs are written against: one layer
//! implementation runs on the CPU ([`CpuExec`], slices and the SIMD kernels) or on a GPU
//! ([`GpuExec`], tensors that stay in device memory between ops).
//!
//! Ops write into an output buffer the caller owns (the CPU reuses its scratch; the GPU
//! replaces the buffer with a fresh pooled one, which is how wgpu avoids aliasing a binding
//! read and written by one dispatch). Shapes are given as counts, exactly as the CPU kernels
//! take them, so the same call sites serve both.

mod cpu;
#[cfg(feature = "gpu")]
mod gpu;

pub use cpu::CpuExec;
#[cfg(feature = "gpu")]
pub use gpu::GpuExec;

use half::f16;

use crate::ops::attention::{AttnMask, AttnParams, KvData};
use crate::ops::conv::Conv2dParams;
use crate::ops::rope::RopeConfig;
use crate::{Result, Tensor};

/// Storage type of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    F32,
    /// llama.cpp's default: half the memory, rounding to nearest.
    #[default]
    F16,
}

impl KvType {
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            _ => Err(format!("unknown KV cache type '{s}' (f32 or f16)")),
        }
    }
}

/// The cached K (or V) rows of one layer, `[n_ctx, width]`, wherever the layer runs.
pub enum KvStore {
    F32(Vec<f32>),
    F16(Vec<f16>),
    /// An F32 or F16 GPU tensor.
    #[cfg(feature = "gpu")]
    Gpu(Tensor),
}

impl KvStore {
    /// Host rows for up to `len` values. Memory is taken as rows are written, not up front,
    /// so a slot's cache costs what its conversation holds, not its context size.
    pub fn host(kind: KvType, len: usize) -> Self {
        let _ = len;
        match kind {
            KvType::F32 => KvStore::F32(Vec::new()),
            KvType::F16 => KvStore::F16(Vec::new()),
        }
    }

    /// The first `len` values of host rows (`None` for GPU storage).
    pub fn host_view(&self, len: usize) -> Option<KvData<'_>> {
        match self {
            KvStore::F32(d) => Some(KvData::F32(&d[..len])),
            KvStore::F16(d) => Some(KvData::F16(&d[..len])),
            #[cfg(feature = "gpu")]
            KvStore::Gpu(_) => None,
        }
    }

    /// Frees host rows past the first `len` values (GPU stores keep their allocation).
    pub fn shrink_to(&mut self, len: usize) {
        match self {
            KvStore::F32(d) => {
                d.truncate(len);
                d.shrink_to_fit();
            }
            KvStore::F16(d) => {
                d.truncate(len);
                d.shrink_to_fit();
            }
            #[cfg(feature = "gpu")]
            KvStore::Gpu(_) => {}
        }
    }

    pub fn size_bytes(&self) -> usize {
        match self {
            KvStore::F32(d) => d.len() * 4,
            KvStore::F16(d) => d.len() * 2,
            #[cfg(feature = "gpu")]
            KvStore::Gpu(t) => t.numel() * t.dtype().type_size(),
        }
    }
}

/// Element-wise activations applied in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unary {
    GeluTanh,
    GeluErf,
    GeluQuick,
    Silu,
}

/// What a model layer needs from a backend. `Act` holds f32 activations (`rows × cols`
/// values, row-major); `Vector` is a small weight vector (a norm's scale, a bias) kept in
/// the backend's memory. Matrices are [`Tensor`]s in the backend's memory (memory-mapped
/// for the CPU, uploaded once for a GPU).
/// One projection of [`Exec::matmul_bias_many`].
pub struct Projection<'a, V, A> {
    pub w: &'a Tensor,
    pub b: Option<&'a V>,
    pub out: &'a mut A,
}

pub trait Exec {
    type Act;
    type Vector;

    /// A buffer for `len` activations (contents unspecified until written).
    fn alloc(&self, len: usize) -> Result<Self::Act>;
    fn upload(&self, data: &[f32]) -> Result<Self::Act>;
    /// The values of `x` in host memory (the CPU hands its buffer over without a copy).
    fn download(&self, x: Self::Act) -> Result<Vec<f32>>;
    /// Like [`Exec::upload`], taking the buffer (the CPU keeps it without a copy).
    fn upload_owned(&self, data: Vec<f32>) -> Result<Self::Act> {
        self.upload(&data)
    }
    fn vector(&self, data: &[f32]) -> Result<Self::Vector>;

    /// How many of the `rows` rows of a wide intermediate (`row_bytes` each, e.g. a
    /// feed-forward's hidden layer) to compute at a time; `None`: all at once. The CPU bounds
    /// the host memory a large intermediate and the GEMM's packed copy of it take (row-wise
    /// steps give the same values in chunks); a GPU keeps whole inputs (fewer dispatches).
    fn chunk_rows(&self, rows: usize, row_bytes: usize) -> Option<usize> {
        let _ = (rows, row_bytes);
        None
    }
    /// `out = rms_norm(x) * w` over rows of `cols`.
    fn rms_norm(
        &self,
        x: &Self::Act,
        w: &Self::Vector,
        eps: f32,
        cols: usize,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// `x = rms_norm(x) * w`; `tmp` is scratch the CPU needs.
    fn rms_norm_inplace(
        &self,
        x: &mut Self::Act,
        w: &Self::Vector,
        eps: f32,
        cols: usize,
        tmp: &mut Self::Act,
    ) -> Result<()>;
    /// `out = layer_norm(x) * w + b` over rows of `cols`.
    fn layer_norm(
        &self,
        x: &Self::Act,
        w: &Self::Vector,
        b: Option<&Self::Vector>,
        eps: f32,
        cols: usize,
        out: &mut Self::Act,
    ) -> Result<()>;
    fn unary(&self, op: Unary, x: &mut Self::Act) -> Result<()>;
    /// `x *= y` element-wise.
    fn mul(&self, x: &mut Self::Act, y: &Self::Act) -> Result<()>;
    /// Encoder attention: `q`, `k`, `v` `[n, width]`; each token attends to every token of
    /// its span (`spans` partition `0..n`; one span for full attention).
    #[allow(clippy::too_many_arguments)]
    fn attention_spans(
        &self,
        q: &Self::Act,
        k: &Self::Act,
        v: &Self::Act,
        n: usize,
        spans: &[std::ops::Range<usize>],
        params: &AttnParams,
        out: &mut Self::Act,
    ) -> Result<()>;
    /// `out[n, m] = x[n, k] · wᵀ` for `w` `[m, k]`.
    fn matmul(&self, w: &Tensor, x: &Self::Act, n: usize, out: &mut Self::Act) -> Result<()>;
    /// [`Exec::matmul`] for a whole input at once (encoders): the summation order may depend
    /// on `n`, so the CPU can use its packed GEMM. A decoder keeps `matmul` (batch invariance).
    fn matmul_wide(&self, w: &Tensor, x: &Self::Act, n: usize, out: &mut Self::Act) -> Result<()> {
        self.matmul(w, x, n, out)
    }
    /// `out = x · wᵀ + b` with [`Exec::matmul`]'s summation (the decoder's biased
    /// projections); one kernel on a GPU.
    fn matmul_bias(
        &self,
        w: &Tensor,
        b: Option<&Self::Vector>,
        x: &Self::Act,
        n: usize,
        out: &mut Self::Act,
    ) -> Result<()> {
        self.matmul(w, x, n, out)?;
        match b {
            Some(b) => self.add_rows(out, b),
            None => Ok(()),
        }
    }
    /// [`Exec::matmul_bias`] for several projections of the same input (q/k/v, gate/up):
    /// `out = x · wᵀ + b` for each `(w, b, out)`, in any order. The CPU runs them as one
    /// parallel job, so a decode step's small projections do not each wait for their
    /// slowest task.
    fn matmul_bias_many(
        &self,
        projections: &mut [Projection<'_, Self::Vector, Self::Act>],
        x: &Self::Act,
        n: usize,
    ) -> Result<()> {
        for p in projections.iter_mut() {
            self.matmul_bias(p.w, p.b, x, n, p.out)?;
        }
        Ok(())
    }
    /// `out = act(x · wᵀ + b)` for a whole input ([`Exec::matmul_wide`]'s summation), the bias
    /// and the activation optional: a linear layer of an encoder. The GPU runs it as one
    /// kernel (the bias and activation in the matmul's epilogue).
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        w: &Tensor,
        b: Option<&Self::Vector>,
        act: Option<Unary>,
        x: &Self::Act,
        n: usize,
        out: &mut Self::Act,
    ) -> Result<()> {
        self.matmul_wide(w, x, n, out)?;
        if let Some(b) = b {
            self.add_rows(out, b)?;
        }
        if let Some(act) = act {
            self.unary(act, out)?;
        }
        Ok(())
    }
    /// `x += b` on every row.
    fn add_rows(&self, x: &mut Self::Act, b: &Self::Vector) -> Result<()>;
    /// `x += y` element-wise.
    fn add(&self, x: &mut Self::Act, y: &Self::Act) -> Result<()>;
    fn scale(&self, x: &mut Self::Act, s: f32) -> Result<()>;
    /// `x = cap · tanh(x / cap)`.
    fn softcap(&self, x: &mut Self::Act, cap: f32) -> Result<()>;
    /// Rope of `x` `[n, heads, head_dim]` (positions as `cpu::rope` takes them).
    fn rope(
        &self,
        x: &mut Self::Act,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos: &[i32],
        cfg: &RopeConfig,
    ) -> Result<()>;
    fn swiglu(&self, gate: &Self::Act, up: &Self::Act, out: &mut Self::Act) -> Result<()>;
    /// ggml's CPU GEGLU (GELU through the f16 table), for llama.cpp parity.
    fn geglu_f16_table(&self, gate: &Self::Act, up: &Self::Act, out: &mut Self::Act) -> Result<()>;
    /// Rows `rows` of `x` (rows of `cols`), gathered into a new buffer.
    fn gather_rows(&self, x: &Self::Act, cols: usize, rows: &[usize]) -> Result<Self::Act>;
    /// Rows `first..first + n` of `dst` (rows of `cols`) become the `n` rows of `src`.
    fn copy_rows(
        &self,
        dst: &mut Self::Act,
        cols: usize,
        first: usize,
        src: &Self::Act,
    ) -> Result<()>;
    /// The im2col rows `[oh·ow, c·kh·kw]` of an image `x` (`[c, h, w]` values) under a
    /// `kh × kw` kernel: a convolution is this times its weight viewed as `[out_c, c·kh·kw]`.
    fn im2col(
        &self,
        x: &Self::Act,
        chw: [usize; 3],
        kernel: [usize; 2],
        p: &Conv2dParams,
    ) -> Result<Self::Act>;
    /// Average of each `kh × kw` block of a `[h·w, d]` token grid: `[(h/kh)·(w/kw), d]`.
    fn pool_avg_grid(&self, x: &Self::Act, hwd: [usize; 3], k: [usize; 2]) -> Result<Self::Act>;
    /// `x` (`[rows, cols]`) transposed to `[cols, rows]`.
    fn transpose(&self, x: &Self::Act, rows: usize, cols: usize) -> Result<Self::Act>;
    /// Each value rounded to the nearest f16 and back (what ggml does to the input of an f16
    /// convolution kernel).
    fn round_f16(&self, x: &mut Self::Act) -> Result<()>;
    /// Each `k × k` block of a `[h·w, d]` token grid as one row `[(h/k)·(w/k), d·k·k]`, ordered
    /// `[channel, ky, kx]`.
    fn unfold_grid(&self, x: &Self::Act, hwd: [usize; 3], k: usize) -> Result<Self::Act>;
    /// Pixtral's 2-D rope of `x` `[n, heads, head_dim]` (as `cpu::rope_2d`): the first half
    /// of each head by `pos_a`, the second by `pos_b`.
    #[allow(clippy::too_many_arguments)]
    fn rope_2d(
        &self,
        x: &mut Self::Act,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos_a: &[i32],
        pos_b: &[i32],
        base: f32,
        interleave_freq: bool,
    ) -> Result<()>;
    /// Bilinear align-corners resize of a `[h·w, d]` token grid to `[oh·ow, d]`.
    fn resize_bilinear_grid(
        &self,
        x: &Self::Act,
        hwd: [usize; 3],
        out_hw: [usize; 2],
    ) -> Result<Self::Act>;
    /// A new cache for `len` values of `kind`.
    fn kv_alloc(&self, kind: KvType, rows: usize, width: usize) -> Result<KvStore>;
    /// Stores `rows` (`[n, width]`) at rows `first..first + n` of `kv`.
    fn kv_write(
        &self,
        kv: &mut KvStore,
        width: usize,
        first: usize,
        rows: &Self::Act,
    ) -> Result<()>;
    /// Rope of the keys `rows` (`[n, heads, head_dim]`, positions as [`Exec::rope`] takes
    /// them) stored at rows `first..first + n` of `kv`: [`Exec::rope`] then
    /// [`Exec::kv_write`], one kernel on a GPU with an F16 cache. `rows` is left unspecified.
    #[allow(clippy::too_many_arguments)]
    fn rope_kv_write(
        &self,
        kv: &mut KvStore,
        first: usize,
        rows: &mut Self::Act,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos: &[i32],
        cfg: &RopeConfig,
    ) -> Result<()> {
        self.rope(rows, n, heads, head_dim, pos, cfg)?;
        self.kv_write(kv, heads * head_dim, first, rows)
    }
    /// Attention of `q` over the first `n_kv` cached rows (contract of `ops::attention`).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &Self::Act,
        k: &KvStore,
        v: &KvStore,
        width: usize,
        n_kv: usize,
        mask: &AttnMask<'_>,
        params: &AttnParams,
        out: &mut Self::Act,
    ) -> Result<()>;
}
