//! GPU ops for the decoder and encoder blocks (re-exported from [`super::ops`]): KV-cache
//! buffers (`zeros`, `write_rows`), fused attention, gated activations, scale / soft cap,
//! row gather, layer norm and Pixtral's 2-D rope. Same contracts as the `tensor::ops` /
//! `tensor::cpu` twins named on each function; results are new GPU tensors unless said.

use super::kernels::{self, AttnCall, KvBuf, NormAffine, RopeShape};
use super::ops::{buffer, f32_buffer, mismatch, output, rope_with_table, rows_cols};
use super::{GpuBuffer, GpuContext};
use crate::ops::attention::{AttnMask, AttnParams};
use crate::ops::rope::{RopeConfig, fill_cache, rope_2d_configs};
use crate::storage::Storage;
use crate::{DType, Result, Tensor, TensorError};

/// Positions beyond this magnitude could overflow the shader's i32 `q_pos - k_pos`.
const MAX_ABS_POS: i32 = 1 << 30;

fn unsupported(op: &'static str, dtype: DType, backend: &'static str) -> TensorError {
    TensorError::Unsupported { op, dtype, backend }
}

/// The buffer of a whole F32 or F16 GPU tensor on `ctx`'s device.
fn f32_or_f16_buffer<'a>(
    t: &'a Tensor,
    ctx: &GpuContext,
    op: &'static str,
) -> Result<&'a GpuBuffer> {
    if !matches!(t.dtype(), DType::F32 | DType::F16) {
        return Err(unsupported(op, t.dtype(), "gpu"));
    }
    let buf = buffer(t, op)?;
    if !buf.context().same_device(ctx) {
        return Err(TensorError::Gpu(format!(
            "{op}: operands live on different GPU devices"
        )));
    }
    Ok(buf)
}

/// A zero-filled GPU tensor of `dtype` (F32 or F16), e.g. a KV cache.
pub fn zeros(ctx: &GpuContext, dtype: DType, shape: &[usize]) -> Result<Tensor> {
    if !matches!(dtype, DType::F32 | DType::F16) {
        return Err(unsupported("zeros", dtype, "gpu"));
    }
    let numel: usize = shape.iter().product();
    let buf = ctx.alloc(numel * dtype.type_size())?;
    kernels::clear(ctx, &buf)?;
    Tensor::new(dtype, shape, Storage::Gpu(buf))
}

/// In place: rows `first_row..first_row + n` of `dst` (`[n_rows, width]`, F32 or F16, any
/// leading shape flattened into rows) become the f32 rows of `rows` (`[n, width]`), rounded
/// to f16 as `half::f16::from_f32` for an F16 `dst`. Every clone of `dst` sees the write.
pub fn write_rows(dst: &Tensor, first_row: usize, rows: &Tensor) -> Result<()> {
    let db = buffer(dst, "write_rows")?;
    let ctx = db.context();
    let db = f32_or_f16_buffer(dst, ctx, "write_rows")?;
    let rb = f32_buffer(rows, ctx, "write_rows")?;
    let (n_rows, width) = rows_cols(dst);
    let n = rows.numel().checked_div(width).unwrap_or(0);
    let fits = first_row.checked_add(n).is_some_and(|end| end <= n_rows);
    if rows.shape().last() != Some(&width) || !fits {
        return Err(mismatch(
            "write_rows",
            format!(
                "rows {:?} at row {first_row} of {:?}",
                rows.shape(),
                dst.shape()
            ),
        ));
    }
    if dst.dtype() == DType::F32 {
        let (start, len) = ((first_row * width * 4) as u64, (n * width * 4) as u64);
        return kernels::copy_ranges(ctx, rb, db, &[(0, start, len)]);
    }
    kernels::write_rows_f16(rb, n, width, db, first_row, None)
}

/// [`write_rows`] of keys `rows` (`[n, heads, head_dim]` f32) rotated by `cfg` at `positions`
/// on the way (as `ops::rope` then `write_rows`): one kernel for an F16 `dst`, whose rope
/// arithmetic is the rope kernel's. `rows` itself is left as it was.
pub fn rope_write_rows(
    dst: &Tensor,
    first_row: usize,
    rows: &Tensor,
    positions: &[i32],
    cfg: &RopeConfig,
) -> Result<()> {
    let &[n, n_heads, head_dim] = rows.shape() else {
        return Err(mismatch(
            "rope_write_rows",
            format!(
                "rows must be [tokens, heads, head_dim], got {:?}",
                rows.shape()
            ),
        ));
    };
    if dst.dtype() != DType::F16 {
        let roped = super::ops::rope(rows, positions, cfg)?;
        return write_rows(dst, first_row, &roped.reshape(&[n, n_heads * head_dim])?);
    }
    let db = buffer(dst, "rope_write_rows")?;
    let ctx = db.context();
    let rb = f32_buffer(rows, ctx, "rope_write_rows")?;
    let (n_rows, width) = rows_cols(dst);
    let fits = first_row.checked_add(n).is_some_and(|end| end <= n_rows);
    if width != n_heads * head_dim || !fits {
        return Err(mismatch(
            "rope_write_rows",
            format!(
                "rows {:?} at row {first_row} of {:?}",
                rows.shape(),
                dst.shape()
            ),
        ));
    }
    let (shape, neox, table) = super::ops::rope_table(n, n_heads, head_dim, positions, cfg)?;
    let tb = ctx.upload(bytemuck::cast_slice(&table))?;
    let rope = kernels::RopeOnWrite {
        table: &tb,
        shape,
        neox,
    };
    kernels::write_rows_f16(rb, n, width, db, first_row, Some(rope))
}

/// Checks that `t` holds `rows × heads × d` values with `rows` outermost.
fn check_rows(name: &str, t: &Tensor, rows: usize, width: usize) -> Result<()> {
    if t.shape().first() != Some(&rows) || t.numel() != rows * width {
        return Err(mismatch(
            "attention",
            format!("{name} must be [{rows}, {width}], got {:?}", t.shape()),
        ));
    }
    Ok(())
}

/// Fused attention, the contract of `tensor::ops::attention`: `q` `[n_q, n_head * d]` f32,
/// `k`/`v` `[n_ctx, n_kv_head * d]` F32 or F16 of which the first `n_kv` rows are used
/// (`n_q`, `n_kv` are the lengths of the mask's position slices). The mask's positions and
/// groups are uploaded per call. Heads up to 256 wide; a query that sees no key gives zeros.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n_kv: usize,
    mask: &AttnMask,
    params: &AttnParams,
) -> Result<Tensor> {
    let ctx = buffer(q, "attention")?.context();
    let qb = f32_buffer(q, ctx, "attention")?;
    let kb = f32_or_f16_buffer(k, ctx, "attention")?;
    let vb = f32_or_f16_buffer(v, ctx, "attention")?;
    let p = params;
    let (n_q, d) = (mask.n_q(), p.head_dim);
    if p.n_kv_head == 0 || !p.n_head.is_multiple_of(p.n_kv_head) {
        return Err(mismatch(
            "attention",
            format!(
                "n_head {} is not a multiple of n_kv_head {}",
                p.n_head, p.n_kv_head
            ),
        ));
    }
    if d == 0 || d > kernels::MAX_HEAD_DIM {
        return Err(unsupported(
            "attention",
            q.dtype(),
            "gpu (head_dim above 256)",
        ));
    }
    check_rows("q", q, n_q, p.n_head * d)?;
    let n_ctx = k.shape().first().copied().unwrap_or(0);
    check_rows("k", k, n_ctx, p.n_kv_head * d)?;
    check_rows("v", v, n_ctx, p.n_kv_head * d)?;
    if mask.n_kv() != n_kv || n_kv > n_ctx {
        return Err(mismatch(
            "attention",
            format!(
                "n_kv {n_kv} with {} key positions and {n_ctx} cached rows",
                mask.n_kv()
            ),
        ));
    }
    for (name, g, n) in [
        ("q_group", mask.q_group, n_q),
        ("k_group", mask.k_group, n_kv),
    ] {
        if let Some(g) = g
            && g.len() != n
        {
            return Err(mismatch(
                "attention",
                format!("{name} has {} ids for {n} tokens", g.len()),
            ));
        }
    }
    let positions = mask.q_pos.iter().chain(mask.k_pos);
    if positions
        .copied()
        .any(|p| p.unsigned_abs() > MAX_ABS_POS as u32)
    {
        return Err(unsupported(
            "attention",
            q.dtype(),
            "gpu (positions beyond ±2^30)",
        ));
    }
    let (out, ob) = output(ctx, q.shape())?;
    if n_q == 0 {
        return Ok(out);
    }
    if n_kv == 0 {
        kernels::clear(ctx, &ob)?;
        return Ok(out);
    }
    let groups = match (mask.q_group, mask.k_group) {
        (Some(qg), Some(kg)) => Some((qg, kg)),
        _ => None,
    };
    let mut data: Vec<i32> = Vec::with_capacity(2 * (n_q + n_kv));
    data.extend_from_slice(mask.q_pos);
    data.extend_from_slice(mask.k_pos);
    if let Some((qg, kg)) = groups {
        // Ids are only compared for equality, so reinterpreting the bits is enough.
        data.extend(qg.iter().chain(kg).map(|&g| g as i32));
    }
    let mask_data = ctx.upload(bytemuck::cast_slice(&data))?;
    // No window and windows wider than any position difference behave the same.
    let window = mask
        .window
        .map_or(i32::MAX, |w| i32::try_from(w).unwrap_or(i32::MAX));
    let call = AttnCall {
        n_q,
        n_kv,
        n_head: p.n_head,
        n_kv_head: p.n_kv_head,
        head_dim: d,
        scale: p.scale,
        softcap: p.softcap.unwrap_or(0.0),
        causal: mask.causal,
        window,
        groups: groups.is_some(),
        mask_data: &mask_data,
    };
    let kv = |buf, t: &Tensor| KvBuf {
        buf,
        f16: t.dtype() == DType::F16,
    };
    kernels::attention(qb, kv(kb, k), kv(vb, v), &call, &ob)?;
    Ok(out)
}

/// Two same-shape f32 GPU operands of a gated activation.
fn gated<'a>(
    op: &'static str,
    gate: &'a Tensor,
    up: &'a Tensor,
) -> Result<(&'a GpuBuffer, &'a GpuBuffer)> {
    let ctx = buffer(gate, op)?.context();
    let gb = f32_buffer(gate, ctx, op)?;
    let ub = f32_buffer(up, ctx, op)?;
    if gate.shape() != up.shape() {
        return Err(mismatch(
            op,
            format!("gate {:?} vs up {:?}", gate.shape(), up.shape()),
        ));
    }
    Ok((gb, ub))
}

/// `silu(gate) * up` element-wise (as `tensor::ops::act::swiglu`).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (gb, ub) = gated("swiglu", gate, up)?;
    let ctx = gb.context();
    let (out, ob) = output(ctx, gate.shape())?;
    kernels::glu(gb, ub, gate.numel(), None, &ob)?;
    Ok(out)
}

/// `gelu(gate) * up` bit-exact with `tensor::cpu::geglu_f16_table` (ggml's CPU GEGLU through
/// the f16 GELU table, uploaded once per device).
pub fn geglu_f16_table(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (gb, ub) = gated("geglu_f16_table", gate, up)?;
    let ctx = gb.context();
    let table = ctx.constant_table("gelu_f16_table", || {
        bytemuck::cast_slice(crate::cpu::gelu_f16_table()).to_vec()
    })?;
    let (out, ob) = output(ctx, gate.shape())?;
    kernels::glu(gb, ub, gate.numel(), Some(&table), &ob)?;
    Ok(out)
}

fn pointwise(entry: &'static str, x: &Tensor, value: f32) -> Result<Tensor> {
    let ctx = buffer(x, entry)?.context();
    let xb = f32_buffer(x, ctx, entry)?;
    let (out, ob) = output(ctx, x.shape())?;
    kernels::pointwise(entry, xb, x.numel(), value, &ob)?;
    Ok(out)
}

/// `x * s` element-wise.
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    pointwise("scale", x, s)
}

/// `cap * tanh(x / cap)` element-wise (Gemma 2's logit soft cap); `cap` must be non-zero.
pub fn softcap(x: &Tensor, cap: f32) -> Result<Tensor> {
    if cap == 0.0 || !cap.is_finite() {
        return Err(mismatch(
            "softcap",
            format!("cap {cap} must be finite and non-zero"),
        ));
    }
    pointwise("softcap", x, cap)
}

/// Each value rounded to the nearest f16 (ties to even) and back, bit-exact with
/// `half::f16::from_f32(v).to_f32()`.
pub fn round_f16(x: &Tensor) -> Result<Tensor> {
    pointwise("round_f16", x, 0.0)
}

/// Rows `rows` of the f32 table `x` (`[n, w]`) as a new `[rows.len(), w]` tensor (as
/// `tensor::ops::get_rows` for f32 tables); an id past the table is an error.
pub fn get_rows(x: &Tensor, rows: &[u32]) -> Result<Tensor> {
    let ctx = buffer(x, "get_rows")?.context();
    let xb = f32_buffer(x, ctx, "get_rows")?;
    let (n, w) = rows_cols(x);
    if let Some(&bad) = rows.iter().find(|&&r| r as usize >= n) {
        return Err(mismatch(
            "get_rows",
            format!("row id {bad} out of range for a table of {n} rows"),
        ));
    }
    let (out, ob) = output(ctx, &[rows.len(), w])?;
    let row_bytes = w as u64 * 4;
    // Consecutive ids become one copy.
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
    for (i, &r) in rows.iter().enumerate() {
        let (src, dst) = (r as u64 * row_bytes, i as u64 * row_bytes);
        match ranges.last_mut() {
            Some((s, d, len)) if *s + *len == src && *d + *len == dst => *len += row_bytes,
            _ => ranges.push((src, dst, row_bytes)),
        }
    }
    kernels::copy_ranges(ctx, xb, &ob, &ranges)?;
    Ok(out)
}

/// An optional per-column layer-norm operand.
fn norm_param<'a>(
    t: Option<&'a Tensor>,
    ctx: &GpuContext,
    cols: usize,
    what: &str,
) -> Result<Option<&'a GpuBuffer>> {
    match t {
        Some(t) if t.numel() != cols => Err(mismatch(
            "layer_norm",
            format!("{what} {:?} for rows of {cols}", t.shape()),
        )),
        Some(t) => f32_buffer(t, ctx, "layer_norm").map(Some),
        None => Ok(None),
    }
}

/// Layer norm per row of the last dimension, `(x - mean) / sqrt(var + eps) * w + b` (as
/// `tensor::ops::norm::layer_norm`); `w` and `b` have one value per column.
pub fn layer_norm(x: &Tensor, w: Option<&Tensor>, b: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let ctx = buffer(x, "layer_norm")?.context();
    let xb = f32_buffer(x, ctx, "layer_norm")?;
    let (rows, cols) = rows_cols(x);
    let affine = NormAffine {
        weight: norm_param(w, ctx, cols, "weight")?,
        bias: norm_param(b, ctx, cols, "bias")?,
    };
    let (out, ob) = output(ctx, x.shape())?;
    kernels::layer_norm(xb, rows, cols, affine, eps, &ob)?;
    Ok(out)
}

/// Pixtral's 2-D vision rope (as `tensor::cpu::rope_2d`): `x` `[n_tokens, n_heads,
/// head_dim]` f32, the first half of each head rotated in adjacent pairs by `pos_a`, the
/// second by `pos_b`. The angles come from the same host code as the CPU kernel's, laid out
/// as one `head_dim / 2`-pair table row per token for the `rope_normal` shader.
pub fn rope_2d(
    x: &Tensor,
    pos_a: &[i32],
    pos_b: &[i32],
    freq_base: f32,
    interleave_freq: bool,
) -> Result<Tensor> {
    let ctx = buffer(x, "rope_2d")?.context();
    let xb = f32_buffer(x, ctx, "rope_2d")?;
    let &[n_tokens, n_heads, head_dim] = x.shape() else {
        return Err(mismatch(
            "rope_2d",
            format!("x must be [tokens, heads, head_dim], got {:?}", x.shape()),
        ));
    };
    if !head_dim.is_multiple_of(4) || pos_a.len() != n_tokens || pos_b.len() != n_tokens {
        return Err(mismatch(
            "rope_2d",
            format!(
                "head_dim {head_dim} (a multiple of 4), {} and {} positions for {n_tokens} tokens",
                pos_a.len(),
                pos_b.len()
            ),
        ));
    }
    let quarter = head_dim / 4;
    let (cfg_a, cfg_b) = rope_2d_configs(head_dim, freq_base, interleave_freq);
    let shape = RopeShape {
        n_tokens,
        n_heads,
        head_dim,
        n_pairs: 2 * quarter,
    };
    // The first quarter of pairs rotates by position a, the second by position b.
    rope_with_table(ctx, xb, x.shape(), "rope_normal", shape, |t, pairs| {
        let (a, b) = pairs.split_at_mut(quarter);
        fill_cache(&cfg_a, [pos_a[t], 0, 0, 0], a);
        fill_cache(&cfg_b, [pos_b[t], 0, 0, 0], b);
    })
}
