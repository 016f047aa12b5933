//! Shared ViT pieces: weight loading by llama.cpp tensor names, linear layers, norms, FFN
//! variants and the pre-norm transformer block (separate or fused QKV, 2D vision rope,
//! optional attention windows).

use std::ops::Range;

use gguf::GgufFile;
use tensor::Tensor;
use tensor::cpu;
use tensor::exec::{CpuExec, Exec, Unary};
use tensor::ops::attention::AttnParams;
use tensor::ops::rope::RopeConfig;

use crate::ClipError;
use crate::hparams::FfnAct;

/// Looks tensors up in an mmproj file by name, zero-copy for matrices.
pub struct WeightLoader<'a> {
    pub file: &'a GgufFile,
}

impl<'a> WeightLoader<'a> {
    pub fn new(file: &'a GgufFile) -> Self {
        Self { file }
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.tensor(name).is_some()
    }

    /// The tensor `name` (row-major shape, any dtype), borrowed from the map.
    pub fn tensor(&self, name: &str) -> Result<Tensor, ClipError> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ClipError::MissingTensor {
                name: name.to_owned(),
            })?;
        Ok(Tensor::from_mapped(
            info.ggml_type,
            &info.shape(),
            self.file.tensor_data(info),
        )?)
    }

    /// Like [`tensor`](Self::tensor) but also checks the row-major shape.
    pub fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor, ClipError> {
        let t = self.tensor(name)?;
        if t.shape() != shape {
            return Err(ClipError::TensorShape {
                name: name.to_owned(),
                actual: t.shape().to_vec(),
                expected: shape.to_vec(),
            });
        }
        Ok(t)
    }

    /// A 1-D tensor of `len` values as f32.
    pub fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, ClipError> {
        Ok(self.tensor_shaped(name, &[len])?.to_f32_vec()?)
    }

    pub fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>, ClipError> {
        if self.has(name) {
            self.vector(name, len).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// `y = x · Wᵀ + b` with `W` `[out, in]` in any dtype. `V` holds the bias: host `Vec<f32>`
/// as loaded, or a backend's vector once the layer is offloaded.
pub struct Linear<V = Vec<f32>> {
    pub w: Tensor,
    pub b: Option<V>,
}

impl<V> Linear<V> {
    pub fn n_out(&self) -> usize {
        self.w.shape()[0]
    }

    pub fn n_in(&self) -> usize {
        self.w.shape()[1]
    }

    /// `x` is `[n, in]`; returns `[n, out]`, on backend `e`.
    pub fn forward_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &E::Act,
        n: usize,
    ) -> Result<E::Act, ClipError> {
        self.forward_act_on(e, x, n, None)
    }

    /// `act(x · Wᵀ + b)`: one kernel on a GPU.
    pub fn forward_act_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &E::Act,
        n: usize,
        act: Option<Unary>,
    ) -> Result<E::Act, ClipError> {
        let mut out = e.alloc(n * self.n_out())?;
        e.linear(&self.w, self.b.as_ref(), act, x, n, &mut out)?;
        Ok(out)
    }
}

impl Linear {
    /// `<prefix>.weight` of shape `[out, in]` and an optional `<prefix>.bias`.
    pub fn load(
        wl: &WeightLoader,
        prefix: &str,
        n_in: usize,
        n_out: usize,
    ) -> Result<Self, ClipError> {
        let w = wl.tensor_shaped(&format!("{prefix}.weight"), &[n_out, n_in])?;
        let b = wl.opt_vector(&format!("{prefix}.bias"), n_out)?;
        Ok(Self { w, b })
    }

    /// `<prefix>.weight` of shape `[out, n_in]` whose output width is what the file stores,
    /// not what its metadata claims (llama.cpp trusts the tensors too).
    pub fn load_to_any_width(
        wl: &WeightLoader,
        prefix: &str,
        n_in: usize,
    ) -> Result<Self, ClipError> {
        let name = format!("{prefix}.weight");
        let shape = wl.tensor(&name)?.shape().to_vec();
        let n_out = match shape[..] {
            [out, inp] if inp == n_in && out > 0 => out,
            _ => {
                return Err(ClipError::TensorShape {
                    name,
                    actual: shape,
                    expected: vec![0, n_in],
                });
            }
        };
        Self::load(wl, prefix, n_in, n_out)
    }

    /// The layer with its weight uploaded to `exec`'s GPU (quantized blocks as stored).
    #[cfg(feature = "gpu")]
    pub fn to_gpu(&self, exec: &tensor::exec::GpuExec) -> Result<Linear<Tensor>, ClipError> {
        Ok(Linear {
            w: exec.weight(&self.w)?,
            b: self.b.as_deref().map(|b| exec.vector(b)).transpose()?,
        })
    }

    /// `x` is `[n, in]`; returns `[n, out]`.
    pub fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>, ClipError> {
        let mut out = vec![0f32; n * self.n_out()];
        cpu::matmul_wide(&self.w, x, n, &mut out)?;
        if let Some(b) = &self.b {
            cpu::add_rows(&mut out, b);
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    Layer,
    Rms,
}

/// Layer norm or RMS norm over rows, with weight and optional bias.
pub struct Norm<V = Vec<f32>> {
    pub kind: NormKind,
    pub w: V,
    pub b: Option<V>,
    pub eps: f32,
}

impl<V> Norm<V> {
    /// `out = norm(x)` over rows of `cols`, on backend `e`.
    pub fn forward_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &E::Act,
        cols: usize,
        out: &mut E::Act,
    ) -> Result<(), ClipError> {
        match self.kind {
            NormKind::Layer => e.layer_norm(x, &self.w, self.b.as_ref(), self.eps, cols, out)?,
            NormKind::Rms => {
                e.rms_norm(x, &self.w, self.eps, cols, out)?;
                if let Some(b) = &self.b {
                    e.add_rows(out, b)?;
                }
            }
        }
        Ok(())
    }
}

impl<V> Norm<V> {
    /// `norm(x)` over rows of `cols` when there is a norm, else `x` itself.
    pub fn opt_apply_on<E: Exec<Vector = V>>(
        norm: Option<&Self>,
        e: &E,
        x: E::Act,
        cols: usize,
    ) -> Result<E::Act, ClipError> {
        let Some(norm) = norm else {
            return Ok(x);
        };
        let mut out = e.alloc(0)?;
        norm.forward_on(e, &x, cols, &mut out)?;
        Ok(out)
    }
}

impl Norm {
    /// An optional norm with its vectors on `exec`'s GPU.
    #[cfg(feature = "gpu")]
    pub fn opt_to_gpu(
        norm: &Option<Self>,
        exec: &tensor::exec::GpuExec,
    ) -> Result<Option<Norm<Tensor>>, ClipError> {
        norm.as_ref().map(|n| n.to_gpu(exec)).transpose()
    }

    pub fn load(
        wl: &WeightLoader,
        prefix: &str,
        dim: usize,
        kind: NormKind,
        eps: f32,
    ) -> Result<Self, ClipError> {
        Ok(Self {
            kind,
            w: wl.vector(&format!("{prefix}.weight"), dim)?,
            b: wl.opt_vector(&format!("{prefix}.bias"), dim)?,
            eps,
        })
    }

    pub fn opt_load(
        wl: &WeightLoader,
        prefix: &str,
        dim: usize,
        kind: NormKind,
        eps: f32,
    ) -> Result<Option<Self>, ClipError> {
        if wl.has(&format!("{prefix}.weight")) {
            Self::load(wl, prefix, dim, kind, eps).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The norm with its vectors on `exec`'s GPU.
    #[cfg(feature = "gpu")]
    pub fn to_gpu(&self, exec: &tensor::exec::GpuExec) -> Result<Norm<Tensor>, ClipError> {
        Ok(Norm {
            kind: self.kind,
            w: exec.vector(&self.w)?,
            b: self.b.as_deref().map(|b| exec.vector(b)).transpose()?,
            eps: self.eps,
        })
    }

    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        let cols = self.w.len();
        match self.kind {
            NormKind::Layer => cpu::layer_norm(
                x,
                Some(&self.w),
                self.b.as_deref(),
                self.eps,
                cols,
                &mut out,
            ),
            NormKind::Rms => {
                cpu::rms_norm(x, Some(&self.w), self.eps, cols, &mut out);
                if let Some(b) = &self.b {
                    cpu::add_rows(&mut out, b);
                }
            }
        }
        out
    }
}

/// Applies an activation in place.
pub fn activate(act: FfnAct, x: &mut [f32]) {
    match act {
        FfnAct::Gelu => cpu::gelu_tanh(x),
        FfnAct::Silu => cpu::silu(x),
        FfnAct::GeluQuick => cpu::gelu_quick(x),
        FfnAct::GeluErf => cpu::gelu_erf(x),
    }
}

fn unary(act: FfnAct) -> Unary {
    match act {
        FfnAct::Gelu => Unary::GeluTanh,
        FfnAct::Silu => Unary::Silu,
        FfnAct::GeluQuick => Unary::GeluQuick,
        FfnAct::GeluErf => Unary::GeluErf,
    }
}

/// `down(act(up(x)))`, or `down(act(gate(x)) * up(x))` when a gate exists.
pub struct Ffn<V = Vec<f32>> {
    pub up: Linear<V>,
    pub gate: Option<Linear<V>>,
    pub down: Linear<V>,
    pub act: FfnAct,
}

impl<V> Ffn<V> {
    pub fn forward_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &E::Act,
        n: usize,
    ) -> Result<E::Act, ClipError> {
        let h = self.hidden_on(e, x, n)?;
        self.down.forward_on(e, &h, n)
    }

    /// [`Ffn::forward_on`] taking `x`, freed as soon as the hidden layer exists: a ViT block's
    /// peak (the wide hidden layer and the down projection) then does not hold it too.
    pub fn forward_owned_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: E::Act,
        n: usize,
    ) -> Result<E::Act, ClipError> {
        let h = self.hidden_on(e, &x, n)?;
        drop(x);
        self.down.forward_on(e, &h, n)
    }

    /// The hidden layer: `act(up(x))`, or `up(x) · act(gate(x))` when gated.
    fn hidden_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &E::Act,
        n: usize,
    ) -> Result<E::Act, ClipError> {
        let act = Some(unary(self.act));
        Ok(match &self.gate {
            Some(gate) => {
                let mut h = self.up.forward_on(e, x, n)?;
                e.mul(&mut h, &gate.forward_act_on(e, x, n, act)?)?;
                h
            }
            None => self.up.forward_act_on(e, x, n, act)?,
        })
    }
}

impl Ffn {
    /// The FFN with its layers on `exec`'s GPU.
    #[cfg(feature = "gpu")]
    pub fn to_gpu(&self, exec: &tensor::exec::GpuExec) -> Result<Ffn<Tensor>, ClipError> {
        Ok(Ffn {
            up: self.up.to_gpu(exec)?,
            gate: self.gate.as_ref().map(|g| g.to_gpu(exec)).transpose()?,
            down: self.down.to_gpu(exec)?,
            act: self.act,
        })
    }

    pub fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>, ClipError> {
        let mut h = self.up.forward(x, n)?;
        match &self.gate {
            Some(gate) => {
                let mut g = gate.forward(x, n)?;
                activate(self.act, &mut g);
                cpu::mul(&mut h, &g);
            }
            None => activate(self.act, &mut h),
        }
        self.down.forward(&h, n)
    }
}

/// Query/key/value projections: three matrices `[q, k, v]` or one fused `[3·d, d]` matrix.
pub enum Qkv<V = Vec<f32>> {
    Separate(Box<[Linear<V>; 3]>),
    Fused(Linear<V>),
}

/// One pre-norm ViT block: `x += attn(ln1(x)); x += ffn(ln2(x))`.
pub struct Block<V = Vec<f32>> {
    pub ln1: Norm<V>,
    pub qkv: Qkv<V>,
    pub out: Linear<V>,
    pub ln2: Norm<V>,
    pub ffn: Ffn<V>,
}

/// A 2-D rotary position embedding over image patches.
#[derive(Clone, Copy)]
pub enum VisionRope<'a> {
    /// A tensor rope mode (Qwen's sectioned vision mode) and its positions (4 per token).
    Sectioned(&'a RopeConfig, &'a [i32]),
    /// Pixtral's axial rope: the first half of each head rotates adjacent pairs by the patch
    /// row, the second half by the column, the halves taking the even and odd frequencies of
    /// one `base^(-2i/head_dim)` table.
    Axial {
        base: f32,
        rows: &'a [i32],
        cols: &'a [i32],
    },
}

impl VisionRope<'_> {
    fn apply_on<E: Exec>(
        &self,
        e: &E,
        x: &mut E::Act,
        n: usize,
        n_head: usize,
        head_dim: usize,
    ) -> Result<(), ClipError> {
        match *self {
            VisionRope::Sectioned(cfg, pos) => e.rope(x, n, n_head, head_dim, pos, cfg)?,
            VisionRope::Axial { base, rows, cols } => {
                e.rope_2d(x, n, n_head, head_dim, rows, cols, base, true)?
            }
        }
        Ok(())
    }
}

/// How the tokens of one forward pass attend.
#[derive(Clone, Copy)]
pub struct AttnSetup<'a> {
    pub n_head: usize,
    pub rope: Option<VisionRope<'a>>,
    /// When set, tokens attend only within each of these contiguous ranges.
    pub windows: Option<&'a [Range<usize>]>,
}

impl Block {
    /// Loads `v.blk.<il>.*` in llama.cpp naming. The feed-forward width comes from the
    /// `ffn_up` tensor, as llama.cpp takes it: some conversions write a
    /// `feed_forward_length` that disagrees with their tensors.
    pub fn load(
        wl: &WeightLoader,
        il: usize,
        n_embd: usize,
        norm: NormKind,
        eps: f32,
        act: FfnAct,
    ) -> Result<Self, ClipError> {
        Self::load_named(wl, &format!("v.blk.{il}"), n_embd, norm, eps, act)
    }

    /// Loads the block whose tensors are named `<p>.attn_q`, `<p>.ln1`, … (audio towers use
    /// `a.blk.<il>`).
    pub fn load_named(
        wl: &WeightLoader,
        p: &str,
        n_embd: usize,
        norm: NormKind,
        eps: f32,
        act: FfnAct,
    ) -> Result<Self, ClipError> {
        let up = Linear::load_to_any_width(wl, &format!("{p}.ffn_up"), n_embd)?;
        let n_ff = up.n_out();
        let qkv = if wl.has(&format!("{p}.attn_qkv.weight")) {
            Qkv::Fused(Linear::load(
                wl,
                &format!("{p}.attn_qkv"),
                n_embd,
                3 * n_embd,
            )?)
        } else {
            Qkv::Separate(Box::new([
                Linear::load(wl, &format!("{p}.attn_q"), n_embd, n_embd)?,
                Linear::load(wl, &format!("{p}.attn_k"), n_embd, n_embd)?,
                Linear::load(wl, &format!("{p}.attn_v"), n_embd, n_embd)?,
            ]))
        };
        let gate = if wl.has(&format!("{p}.ffn_gate.weight")) {
            Some(Linear::load(wl, &format!("{p}.ffn_gate"), n_embd, n_ff)?)
        } else {
            None
        };
        Ok(Self {
            ln1: Norm::load(wl, &format!("{p}.ln1"), n_embd, norm, eps)?,
            qkv,
            out: Linear::load(wl, &format!("{p}.attn_out"), n_embd, n_embd)?,
            ln2: Norm::load(wl, &format!("{p}.ln2"), n_embd, norm, eps)?,
            ffn: Ffn {
                up,
                gate,
                down: Linear::load(wl, &format!("{p}.ffn_down"), n_ff, n_embd)?,
                act,
            },
        })
    }

    /// Runs the block in place on `x` `[n, n_embd]` on the CPU.
    pub fn forward(&self, x: &mut Vec<f32>, n: usize, setup: &AttnSetup) -> Result<(), ClipError> {
        self.forward_on(&CpuExec, x, n, setup)
    }
}

impl<V> Block<V> {
    /// Runs the block in place on `x` `[n, n_embd]` on backend `e`.
    pub fn forward_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &mut E::Act,
        n: usize,
        setup: &AttnSetup,
    ) -> Result<(), ClipError> {
        let d = self.out.n_out();
        let mut h = e.alloc(0)?;
        self.ln1.forward_on(e, x, d, &mut h)?;
        let (mut q, mut k, v) = match &self.qkv {
            Qkv::Separate(w) => (
                w[0].forward_on(e, &h, n)?,
                w[1].forward_on(e, &h, n)?,
                w[2].forward_on(e, &h, n)?,
            ),
            // Rows `[q | k | v]` seen as 3n rows of d: q, k and v are every third row.
            // (On a GPU the matrix is split at upload and this path does not run.)
            Qkv::Fused(w) => {
                let fused = w.forward_on(e, &h, n)?;
                let part = |j: usize| {
                    e.gather_rows(&fused, d, &(0..n).map(|t| 3 * t + j).collect::<Vec<_>>())
                };
                (part(0)?, part(1)?, part(2)?)
            }
        };
        // The normed input is not needed past the projections.
        drop(h);
        let head_dim = d / setup.n_head;
        if let Some(rope) = setup.rope {
            rope.apply_on(e, &mut q, n, setup.n_head, head_dim)?;
            rope.apply_on(e, &mut k, n, setup.n_head, head_dim)?;
        }
        let mut att = e.alloc(n * d)?;
        let params = AttnParams::mha(setup.n_head, head_dim);
        let all = std::slice::from_ref(&(0..n)).to_vec();
        let spans = setup.windows.unwrap_or(&all);
        e.attention_spans(&q, &k, &v, n, spans, &params, &mut att)?;
        // Freed before the feed-forward's wide intermediates exist: the block's peak memory
        // is then x and the FFN, not also q, k, v and the attention output (a 4096-patch
        // SigLIP block: ~95 MB less).
        drop((q, k, v));
        let o = self.out.forward_on(e, &att, n)?;
        drop(att);
        e.add(x, &o)?;
        drop(o);
        let hidden_row_bytes = self.ffn.up.n_out() * std::mem::size_of::<f32>();
        match e.chunk_rows(n, hidden_row_bytes) {
            Some(rows) if rows < n => self.ffn_residual_chunked_on(e, x, n, rows),
            _ => self.ffn_residual_on(e, x, n),
        }
    }

    /// `x += ffn(ln2(x))` over all `n` rows at once.
    pub fn ffn_residual_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &mut E::Act,
        n: usize,
    ) -> Result<(), ClipError> {
        let mut h = e.alloc(0)?;
        self.ln2.forward_on(e, x, self.out.n_out(), &mut h)?;
        let f = self.ffn.forward_owned_on(e, h, n)?;
        e.add(x, &f)?;
        Ok(())
    }

    /// [`Block::ffn_residual_on`] on chunks of at most `max_rows` rows (of near-equal size):
    /// the hidden layer then takes a chunk's share of memory. Every step is row-wise and each
    /// chunk still runs the GEMM, so the values are those of the whole-input pass.
    pub fn ffn_residual_chunked_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        x: &mut E::Act,
        n: usize,
        max_rows: usize,
    ) -> Result<(), ClipError> {
        let d = self.out.n_out();
        let chunks = n.div_ceil(max_rows.max(1));
        let rows = n.div_ceil(chunks);
        for first in (0..n).step_by(rows) {
            let len = rows.min(n - first);
            let mut part = e.gather_rows(x, d, &(first..first + len).collect::<Vec<_>>())?;
            self.ffn_residual_on(e, &mut part, len)?;
            e.copy_rows(x, d, first, &part)?;
        }
        Ok(())
    }
}

/// The patch convolution weight `[d, 3, p, p]` as the matrix `[d, 3·p²]` that multiplies
/// the image's im2col rows.
pub fn patch_matrix(w: &Tensor) -> Result<Tensor, ClipError> {
    let d = w.shape().first().copied().unwrap_or(0);
    Ok(w.contiguous()?.reshape(&[d, w.numel() / d.max(1)])?)
}

/// An optional weight vector (a bias) on `exec`'s GPU.
#[cfg(feature = "gpu")]
pub fn opt_vector_to_gpu(
    v: &Option<Vec<f32>>,
    exec: &tensor::exec::GpuExec,
) -> Result<Option<Tensor>, ClipError> {
    Ok(v.as_deref().map(|v| exec.vector(v)).transpose()?)
}

/// Patch embedding of planar RGB pixels on backend `e`, `[n_patches, d]` in raster order:
/// the pixels uploaded, cut into patches (im2col) and multiplied by `w` ([`patch_matrix`]),
/// plus the bias `b` (one kernel on a GPU).
pub fn patch_embed_on<E: Exec>(
    e: &E,
    pixels: &[f32],
    width: usize,
    height: usize,
    (w, b): (&Tensor, Option<&E::Vector>),
    patch: usize,
) -> Result<E::Act, ClipError> {
    let n = (width / patch) * (height / patch);
    let image = e.upload(pixels)?;
    let cols = e.im2col(
        &image,
        [3, height, width],
        [patch, patch],
        &cpu::Conv2dParams::patch(patch),
    )?;
    drop(image);
    let mut x = e.alloc(n * w.shape()[0])?;
    e.linear(w, b, None, &cols, n, &mut x)?;
    Ok(x)
}

/// Checks the pixel buffer against the claimed size and the patch grid.
pub fn check_pixels(
    pixels: &[f32],
    width: usize,
    height: usize,
    align: usize,
) -> Result<(), ClipError> {
    if width == 0 || height == 0 || pixels.len() != 3 * width * height {
        return Err(ClipError::BadImage(format!(
            "{} values for a 3x{height}x{width} image",
            pixels.len()
        )));
    }
    if !width.is_multiple_of(align) || !height.is_multiple_of(align) {
        return Err(ClipError::BadImage(format!(
            "{width}x{height} is not a multiple of {align}"
        )));
    }
    Ok(())
}
