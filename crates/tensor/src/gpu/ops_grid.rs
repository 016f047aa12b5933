//! GPU ops on images and token grids (re-exported from [`super::ops`]): the im2col of a
//! convolution, the average pool, unfold and bilinear resize of a `[h·w, d]` token grid, and
//! a transpose. Same
//! contracts as `cpu::conv::im2col_2d` and `cpu::grid`; results are new F32 GPU tensors. An
//! input or output over the device's binding limit runs on the host twin instead (a copy
//! each way) rather than being refused.

use super::GpuContext;
use super::kernels::{self, GridParams};
use super::ops::{buffer, f32_buffer, mismatch, output};
use crate::ops::conv::Conv2dParams;
use crate::{Result, Tensor, TensorError, cpu};

fn fits(ctx: &GpuContext, values: usize) -> bool {
    (values as u64) * 4 <= ctx.binding_limit()
}

fn u32s<const N: usize>(v: [usize; N], op: &'static str) -> Result<[u32; N]> {
    let mut out = [0u32; N];
    for (o, x) in out.iter_mut().zip(v) {
        *o = u32::try_from(x)
            .map_err(|_| TensorError::Gpu(format!("{op}: size {x} does not fit in u32")))?;
    }
    Ok(out)
}

/// Runs `host` on the values of `x` and uploads its `shape`-d result (the over-limit path).
fn on_host(
    ctx: &GpuContext,
    x: &Tensor,
    shape: &[usize],
    host: impl FnOnce(&[f32], &mut [f32]),
) -> Result<Tensor> {
    let src = x.to_f32_vec()?;
    let mut out = vec![0f32; shape.iter().product()];
    host(&src, &mut out);
    Tensor::from_f32(shape, &out)?.to_gpu(ctx)
}

/// Rows `[oh·ow, c·kh·kw]` of the image `x` (`[c, h, w]` values) under a `kh × kw` kernel,
/// zeros in the padding: a convolution is this times the weight viewed as `[out_c, c·kh·kw]`.
pub fn im2col(
    x: &Tensor,
    [c, h, w]: [usize; 3],
    [kh, kw]: [usize; 2],
    p: &Conv2dParams,
) -> Result<Tensor> {
    let ctx = buffer(x, "im2col")?.context();
    let xb = f32_buffer(x, ctx, "im2col")?;
    let Some([oh, ow]) = p.out_size(h, w, kh, kw).filter(|_| x.numel() == c * h * w) else {
        return Err(mismatch(
            "im2col",
            format!(
                "{} values as [{c}, {h}, {w}] under a {kh}x{kw} kernel, {p:?}",
                x.numel()
            ),
        ));
    };
    let shape = [oh * ow, c * kh * kw];
    let total = shape[0] * shape[1];
    if !fits(ctx, total) || !fits(ctx, x.numel()) {
        return on_host(ctx, x, &shape, |src, out| {
            cpu::conv::im2col_2d(src, [c, h, w], [kh, kw], p, ow, 0, out)
        });
    }
    let [total_u, c_u, h_u, w_u, oh_u, ow_u, kh_u, kw_u] =
        u32s([total, c, h, w, oh, ow, kh, kw], "im2col")?;
    let [sy, sx, py, px, dy, dx] = u32s(
        [
            p.stride[0],
            p.stride[1],
            p.padding[0],
            p.padding[1],
            p.dilation[0],
            p.dilation[1],
        ],
        "im2col",
    )?;
    let params = GridParams {
        total: total_u,
        c: c_u,
        h: h_u,
        w: w_u,
        oh: oh_u,
        ow: ow_u,
        kh: kh_u,
        kw: kw_u,
        stride_y: sy,
        stride_x: sx,
        pad_y: py,
        pad_x: px,
        dil_y: dy,
        dil_x: dx,
        ..GridParams::default()
    };
    let (out, ob) = output(ctx, &shape)?;
    kernels::grid("im2col", xb, x.numel(), &params, &ob)?;
    Ok(out)
}

/// Checks a `[h·w, d]` grid operand.
fn grid_operand<'a>(
    x: &'a Tensor,
    [h, w, d]: [usize; 3],
    op: &'static str,
) -> Result<(&'a GpuContext, &'a super::GpuBuffer)> {
    let ctx = buffer(x, op)?.context();
    let xb = f32_buffer(x, ctx, op)?;
    if x.numel() != h * w * d || h == 0 || w == 0 {
        return Err(mismatch(
            op,
            format!("{} values as a {h}x{w} grid of {d}", x.numel()),
        ));
    }
    Ok((ctx, xb))
}

/// Average of each `kh × kw` block of the grid `x` (`[h·w, d]`): `[(h/kh)·(w/kw), d]`.
pub fn pool_avg_grid(x: &Tensor, hwd: [usize; 3], k: [usize; 2]) -> Result<Tensor> {
    blocks_op(x, hwd, k, false)
}

/// Each `k × k` block of the grid `x` (`[h·w, d]`) as one row `[(h/k)·(w/k), d·k·k]` ordered
/// `[channel, ky, kx]` (as `cpu::grid::unfold`).
pub fn unfold_grid(x: &Tensor, hwd: [usize; 3], k: usize) -> Result<Tensor> {
    blocks_op(x, hwd, [k, k], true)
}

/// Block ops of a grid: the average of each `kh × kw` block (`unfold` false) or each square
/// block unfolded into a row.
fn blocks_op(
    x: &Tensor,
    [h, w, d]: [usize; 3],
    [kh, kw]: [usize; 2],
    unfold: bool,
) -> Result<Tensor> {
    let op = if unfold {
        "unfold_grid"
    } else {
        "pool_avg_grid"
    };
    let (ctx, xb) = grid_operand(x, [h, w, d], op)?;
    if kh == 0 || kw == 0 || !h.is_multiple_of(kh) || !w.is_multiple_of(kw) {
        return Err(mismatch(op, format!("{kh}x{kw} blocks on a {h}x{w} grid")));
    }
    let k = kh;
    let (oh, ow) = (h / kh, w / kw);
    let width = if unfold { d * k * k } else { d };
    let shape = [oh * ow, width];
    if !fits(ctx, x.numel()) {
        return on_host(ctx, x, &shape, |src, out| {
            if unfold {
                cpu::grid::unfold(src, [h, w, d], k, out)
            } else {
                cpu::grid::pool_avg(src, [h, w, d], [kh, kw], out)
            }
        });
    }
    let [total, c, h_u, w_u, oh_u, ow_u, kh_u, kw_u] =
        u32s([oh * ow * width, d, h, w, oh, ow, kh, kw], op)?;
    let params = GridParams {
        total,
        c,
        h: h_u,
        w: w_u,
        oh: oh_u,
        ow: ow_u,
        kh: kh_u,
        kw: kw_u,
        k: kh_u,
        ..GridParams::default()
    };
    let (out, ob) = output(ctx, &shape)?;
    let entry = if unfold { "unfold" } else { "pool_avg" };
    kernels::grid(entry, xb, x.numel(), &params, &ob)?;
    Ok(out)
}

/// Bilinear align-corners resize of the grid `x` (`[h·w, d]`) to `[oh·ow, d]`.
pub fn resize_bilinear_grid(
    x: &Tensor,
    [h, w, d]: [usize; 3],
    [oh, ow]: [usize; 2],
) -> Result<Tensor> {
    let (ctx, xb) = grid_operand(x, [h, w, d], "resize_bilinear_grid")?;
    let shape = [oh * ow, d];
    if !fits(ctx, x.numel()) || !fits(ctx, oh * ow * d) {
        return on_host(ctx, x, &shape, |src, out| {
            cpu::grid::resize_bilinear(src, [h, w, d], [oh, ow], out)
        });
    }
    let [total, c, h_u, w_u, oh_u, ow_u] =
        u32s([oh * ow * d, d, h, w, oh, ow], "resize_bilinear_grid")?;
    let params = GridParams {
        total,
        c,
        h: h_u,
        w: w_u,
        oh: oh_u,
        ow: ow_u,
        ..GridParams::default()
    };
    let (out, ob) = output(ctx, &shape)?;
    kernels::grid("resize_bilinear", xb, x.numel(), &params, &ob)?;
    Ok(out)
}

/// `x` (`[rows, cols]` values) transposed to `[cols, rows]`.
pub fn transpose(x: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
    let ctx = buffer(x, "transpose")?.context();
    let xb = f32_buffer(x, ctx, "transpose")?;
    if x.numel() != rows * cols {
        return Err(mismatch(
            "transpose",
            format!("{} values as [{rows}, {cols}]", x.numel()),
        ));
    }
    let shape = [cols, rows];
    if !fits(ctx, x.numel()) {
        return on_host(ctx, x, &shape, |src, out| {
            cpu::transpose(src, rows, cols, out)
        });
    }
    let [total, h, w] = u32s([rows * cols, rows, cols], "transpose")?;
    let params = GridParams {
        total,
        h,
        w,
        ..GridParams::default()
    };
    let (out, ob) = output(ctx, &shape)?;
    kernels::grid("transpose", xb, x.numel(), &params, &ob)?;
    Ok(out)
}
