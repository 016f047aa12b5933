//! Tensor-level ops on GPU tensors: the same contracts as `tensor::ops` (each op's scalar
//! reference), for operands in `Storage::Gpu` on one device. Results stay on the GPU.
//!
//! Activations are f32; matmul weights may be f32, f16, bf16 or any of the quantized formats
//! the models use (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K, IQ4_NL, IQ4_XS), kept in their
//! stored blocks and decoded in the shader.
//! Anything else is `Err(Unsupported)`, which callers treat as "run it on the CPU"; ask
//! [`supports`] first to avoid the round trip.

use super::kernels::{self, RopeShape};
use super::{GpuBuffer, GpuContext, whole_buffer_check};
use crate::ops::rope::{RopeConfig, RopeMode, fill_cache, token_pos};
use crate::storage::Storage;
use crate::{DType, Result, Tensor, TensorError};

pub use super::ops_grid::{im2col, pool_avg_grid, resize_bilinear_grid, transpose, unfold_grid};
pub use super::ops_nn::{
    attention, geglu_f16_table, get_rows, layer_norm, rope_2d, rope_write_rows, round_f16, scale,
    softcap, swiglu, write_rows, zeros,
};

/// The ops this backend runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuOp {
    Matmul,
    Add,
    Mul,
    RmsNorm,
    Softmax,
    Rope,
    GeluTanh,
    GeluErf,
    GeluQuick,
    Silu,
}

/// Whether `op` runs on the GPU for an operand of `dtype` (the weight's for matmul, the
/// activation's otherwise).
pub fn supports(op: GpuOp, dtype: DType) -> bool {
    match op {
        GpuOp::Matmul => kernels::weight_type_constant(dtype).is_some(),
        _ => dtype == DType::F32,
    }
}

/// The buffer of a whole GPU tensor.
pub(super) fn buffer<'a>(t: &'a Tensor, op: &'static str) -> Result<&'a GpuBuffer> {
    let Storage::Gpu(buf) = t.storage() else {
        return Err(TensorError::Unsupported {
            op,
            dtype: t.dtype(),
            backend: "gpu (operand on host)",
        });
    };
    whole_buffer_check(t, buf, op)?;
    Ok(buf)
}

/// The buffer of a whole f32 GPU tensor on the same device as `ctx`.
pub(super) fn f32_buffer<'a>(
    t: &'a Tensor,
    ctx: &GpuContext,
    op: &'static str,
) -> Result<&'a GpuBuffer> {
    if t.dtype() != DType::F32 {
        return Err(TensorError::Unsupported {
            op,
            dtype: t.dtype(),
            backend: "gpu",
        });
    }
    let buf = buffer(t, op)?;
    if !buf.context().same_device(ctx) {
        return Err(TensorError::Gpu(format!(
            "{op}: operands live on different GPU devices"
        )));
    }
    Ok(buf)
}

/// A new f32 GPU tensor of `shape` on `ctx`, to be filled by a kernel.
pub(super) fn output(ctx: &GpuContext, shape: &[usize]) -> Result<(Tensor, GpuBuffer)> {
    let numel: usize = shape.iter().product();
    let buf = ctx.alloc(numel * 4)?;
    let t = Tensor::new(DType::F32, shape, Storage::Gpu(buf.clone()))?;
    Ok((t, buf))
}

pub(super) fn mismatch(op: &'static str, detail: String) -> TensorError {
    TensorError::ShapeMismatch { op, detail }
}

/// `x · wᵀ` (as `ops::matmul::matmul`): x is `[.., k]` f32, w is `[m, k]` in a format
/// [`supports`] accepts; the result `[.., m]`.
pub fn matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear(x, w, None, None)
}

/// `act(x · wᵀ + b)` in one kernel: [`matmul`] with the bias (`m` values) added and the
/// activation applied to each result before it is stored.
pub fn linear(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    act: Option<crate::exec::Unary>,
) -> Result<Tensor> {
    let wb = buffer(w, "matmul")?;
    let ctx = wb.context();
    let xb = f32_buffer(x, ctx, "matmul")?;
    let &[m, k] = w.shape() else {
        return Err(mismatch(
            "matmul",
            format!("weight must be [m, k], got {:?}", w.shape()),
        ));
    };
    if x.shape().last() != Some(&k) {
        return Err(mismatch(
            "matmul",
            format!("x {:?} against weight {:?}", x.shape(), w.shape()),
        ));
    }
    let n: usize = x.shape()[..x.rank() - 1].iter().product();
    let mut shape = x.shape().to_vec();
    if let Some(last) = shape.last_mut() {
        *last = m;
    }
    let bias = match bias {
        Some(b) if b.numel() != m => {
            return Err(mismatch(
                "matmul",
                format!("bias {:?} for {m} output columns", b.shape()),
            ));
        }
        Some(b) => Some(f32_buffer(b, ctx, "matmul")?),
        None => None,
    };
    let epilogue = kernels::Epilogue {
        bias,
        act: act.map_or(0, act_code),
    };
    let (out, ob) = output(ctx, &shape)?;
    kernels::matmul(wb, w.dtype(), m, k, xb, n, epilogue, &ob)?;
    Ok(out)
}

/// The shader prelude's `ACT_*` code of an activation.
fn act_code(act: crate::exec::Unary) -> u32 {
    use crate::exec::Unary;
    match act {
        Unary::GeluTanh => 1,
        Unary::GeluErf => 2,
        Unary::GeluQuick => 3,
        Unary::Silu => 4,
    }
}

/// Whether `b` broadcast over `shape` is one block repeated: its dimensions, leading 1s
/// dropped, are a suffix of `shape`.
fn repeats_over(b: &[usize], shape: &[usize]) -> bool {
    let inner: Vec<usize> = b.iter().copied().skip_while(|&d| d == 1).collect();
    shape.ends_with(&inner)
}

/// Element-wise binary op with numpy broadcasting, for the case ggml uses: `b` repeated over
/// `a` (other broadcasts are `Unsupported`, for the CPU to do).
fn binary(entry: &'static str, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ab = buffer(a, entry)?;
    let ctx = ab.context();
    let ab = f32_buffer(a, ctx, entry)?;
    let bb = f32_buffer(b, ctx, entry)?;
    if !repeats_over(b.shape(), a.shape()) {
        return Err(TensorError::Unsupported {
            op: entry,
            dtype: b.dtype(),
            backend: "gpu (this broadcast)",
        });
    }
    // Extra leading 1s of b still widen the result's rank (numpy rules).
    let mut shape = vec![1; b.rank().saturating_sub(a.rank())];
    shape.extend_from_slice(a.shape());
    let (out, ob) = output(ctx, &shape)?;
    kernels::binary(entry, ab, a.numel(), bb, b.numel(), &ob)?;
    Ok(out)
}

/// `a + b` (b broadcast over rows, see `binary`).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("add", a, b)
}

/// `a * b` element-wise (b broadcast over rows).
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary("mul", a, b)
}

fn unary(entry: &'static str, x: &Tensor) -> Result<Tensor> {
    let ctx = buffer(x, entry)?.context();
    let xb = f32_buffer(x, ctx, entry)?;
    let (out, ob) = output(ctx, x.shape())?;
    kernels::unary(entry, xb, x.numel(), &ob)?;
    Ok(out)
}

/// GELU, tanh approximation.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    unary("gelu_tanh", x)
}

/// GELU with the exact erf.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    unary("gelu_erf", x)
}

/// `x * sigmoid(1.702 x)`.
pub fn gelu_quick(x: &Tensor) -> Result<Tensor> {
    unary("gelu_quick", x)
}

/// `x * sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    unary("silu", x)
}

/// Rows of the last dimension and their length.
pub(super) fn rows_cols(x: &Tensor) -> (usize, usize) {
    let cols = x.shape().last().copied().unwrap_or(1);
    (x.numel() / cols.max(1), cols)
}

/// `x / sqrt(mean(x²) + eps) * w` per row; `w` has one value per column.
pub fn rms_norm(x: &Tensor, w: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let ctx = buffer(x, "rms_norm")?.context();
    let xb = f32_buffer(x, ctx, "rms_norm")?;
    let (rows, cols) = rows_cols(x);
    let wb = match w {
        Some(w) if w.numel() != cols => {
            return Err(mismatch(
                "rms_norm",
                format!("weight {:?} for rows of {cols}", w.shape()),
            ));
        }
        Some(w) => Some(f32_buffer(w, ctx, "rms_norm")?),
        None => None,
    };
    let (out, ob) = output(ctx, x.shape())?;
    kernels::rms_norm(xb, rows, cols, wb, eps, &ob)?;
    Ok(out)
}

/// `softmax(x * scale + mask)` per row (as `ops::softmax::softmax`). The mask must repeat
/// over x whole (e.g. `[n_q, n_kv]` for `[n_head, n_q, n_kv]`); other broadcasts are
/// `Unsupported`. Mask values <= -1e30 (incl. -inf) exclude a column; a row with none left
/// becomes zeros.
pub fn softmax(x: &Tensor, mask: Option<&Tensor>, scale: f32) -> Result<Tensor> {
    let ctx = buffer(x, "softmax")?.context();
    let xb = f32_buffer(x, ctx, "softmax")?;
    let (rows, cols) = rows_cols(x);
    if cols == 0 {
        return Err(mismatch(
            "softmax",
            format!("no rows in shape {:?}", x.shape()),
        ));
    }
    let mask = match mask {
        Some(m) if m.rank() > x.rank() || !repeats_over(m.shape(), x.shape()) => {
            return Err(TensorError::Unsupported {
                op: "softmax",
                dtype: m.dtype(),
                backend: "gpu (this mask broadcast)",
            });
        }
        Some(m) if m.shape().last() != Some(&cols) => {
            return Err(TensorError::Unsupported {
                op: "softmax",
                dtype: m.dtype(),
                backend: "gpu (mask broadcast along rows)",
            });
        }
        Some(m) => Some((f32_buffer(m, ctx, "softmax")?, m.numel() / cols)),
        None => None,
    };
    let (out, ob) = output(ctx, x.shape())?;
    kernels::softmax(xb, rows, cols, scale, mask, &ob)?;
    Ok(out)
}

/// Rope of `x` (`[n_tokens, n_heads, head_dim]` f32) for every mode of [`RopeMode`];
/// `positions` as for `cpu::rope`. The angles are computed on the host exactly as the CPU
/// kernel does, so both backends rotate by the same cos/sin.
pub fn rope(x: &Tensor, positions: &[i32], cfg: &RopeConfig) -> Result<Tensor> {
    let ctx = buffer(x, "rope")?.context();
    let xb = f32_buffer(x, ctx, "rope")?;
    let &[n_tokens, n_heads, head_dim] = x.shape() else {
        return Err(mismatch(
            "rope",
            format!("x must be [tokens, heads, head_dim], got {:?}", x.shape()),
        ));
    };
    let (shape, neox, table) = rope_table(n_tokens, n_heads, head_dim, positions, cfg)?;
    let entry = if neox { "rope_neox" } else { "rope_normal" };
    let tb = ctx.upload(bytemuck::cast_slice(&table))?;
    let (out, ob) = output(ctx, x.shape())?;
    kernels::rope(entry, xb, &tb, shape, &ob)?;
    Ok(out)
}

/// The rope shader's view of a rope call: its shape, whether it pairs halves (NeoX, M-RoPE,
/// vision) rather than neighbours, and the (cos, sin) table, `n_pairs.max(1)` pairs per token,
/// computed on the host as the CPU does.
pub(super) fn rope_table(
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    positions: &[i32],
    cfg: &RopeConfig,
) -> Result<(RopeShape, bool, Vec<f32>)> {
    check_rope(n_tokens, head_dim, positions.len(), cfg)?;
    let (neox, n_pairs) = match cfg.mode {
        RopeMode::Normal => (false, cfg.n_dims / 2),
        RopeMode::Vision { .. } => (true, head_dim / 2),
        _ => (true, cfg.n_dims / 2),
    };
    let shape = RopeShape {
        n_tokens,
        n_heads,
        head_dim,
        n_pairs,
    };
    let table = table_of(shape, |t, pairs| {
        fill_cache(cfg, token_pos(&cfg.mode, positions, n_tokens, t), pairs)
    });
    Ok((shape, neox, table))
}

/// The (cos, sin) table `pairs_of(token, pairs)` fills per token (one dummy pair per token
/// when nothing rotates), laid out as the rope shaders read it.
fn table_of(shape: RopeShape, mut pairs_of: impl FnMut(usize, &mut [(f32, f32)])) -> Vec<f32> {
    let row = shape.n_pairs.max(1);
    let mut table = vec![0f32; shape.n_tokens * row * 2];
    let mut pairs = vec![(0f32, 0f32); shape.n_pairs];
    for t in 0..shape.n_tokens {
        pairs_of(t, &mut pairs);
        for (i, &(c, s)) in pairs.iter().enumerate() {
            table[(t * row + i) * 2] = c;
            table[(t * row + i) * 2 + 1] = s;
        }
    }
    table
}

/// Runs rope shader `entry` with the (cos, sin) table `pairs_of(token, pairs)` fills per token.
pub(super) fn rope_with_table(
    ctx: &GpuContext,
    xb: &GpuBuffer,
    x_shape: &[usize],
    entry: &'static str,
    shape: RopeShape,
    pairs_of: impl FnMut(usize, &mut [(f32, f32)]),
) -> Result<Tensor> {
    let table = table_of(shape, pairs_of);
    let tb = ctx.upload(bytemuck::cast_slice(&table))?;
    let (out, ob) = output(ctx, x_shape)?;
    kernels::rope(entry, xb, &tb, shape, &ob)?;
    Ok(out)
}

/// The agreements `cpu::rope` asserts, as errors.
fn check_rope(n_tokens: usize, head_dim: usize, n_pos: usize, cfg: &RopeConfig) -> Result<()> {
    if !cfg.n_dims.is_multiple_of(2) || cfg.n_dims > head_dim {
        return Err(mismatch(
            "rope",
            format!(
                "n_dims {} must be even and <= head_dim {head_dim}",
                cfg.n_dims
            ),
        ));
    }
    if matches!(cfg.mode, RopeMode::Vision { .. }) && cfg.n_dims * 2 != head_dim {
        return Err(mismatch(
            "rope",
            format!(
                "vision rope needs n_dims == head_dim / 2, got {}",
                cfg.n_dims
            ),
        ));
    }
    if n_pos != n_tokens * cfg.mode.positions_per_token() {
        return Err(mismatch(
            "rope",
            format!("{n_tokens} tokens, {n_pos} positions for {:?}", cfg.mode),
        ));
    }
    if let RopeMode::MultiSection { sections }
    | RopeMode::Vision { sections }
    | RopeMode::Imrope { sections } = cfg.mode
        && sections.iter().sum::<usize>() == 0
    {
        return Err(mismatch("rope", "all rope sections are zero".into()));
    }
    Ok(())
}
