//! Row reductions: `shaders/rms_norm.wgsl` and `shaders/softmax.wgsl` (one workgroup per row).

use super::{Bound, prepare, submit, to_u32, whole};
use crate::gpu::GpuBuffer;
use crate::gpu::split::{BindRange, RowLayout, plan_row_chunks};
use crate::{Result, TensorError};

/// Mirrors `RmsNormParams` in `shaders/rms_norm.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RmsNormParams {
    pub rows: u32,
    pub cols: u32,
    pub x_offset: u32,
    pub out_offset: u32,
    pub eps: f32,
    /// 1 when a weight row multiplies the result.
    pub has_weight: u32,
    pub _pad: [u32; 2],
}

/// Mirrors `SoftmaxParams` in `shaders/softmax.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SoftmaxParams {
    pub rows: u32,
    pub cols: u32,
    pub x_offset: u32,
    pub out_offset: u32,
    /// Multiplies x before the mask is added.
    pub scale: f32,
    /// 1 when a mask is added.
    pub has_mask: u32,
    /// Rows of the mask; row r of x uses mask row r % mask_rows.
    pub mask_rows: u32,
    /// Global index of the chunk's first row (for the mask row).
    pub row_base: u32,
}

/// A whole-buffer binding for an optional operand, or a stand-in when it is absent (the
/// shader never reads it then, but every binding needs a buffer).
pub(super) fn optional_binding<'a>(
    operand: Option<(&'a GpuBuffer, usize)>,
    stand_in: &'a GpuBuffer,
    limit: u64,
    what: &str,
) -> Result<Bound<'a>> {
    match operand {
        Some((buf, bytes)) => {
            let range = whole(bytes);
            if range.size > limit {
                return Err(TensorError::Gpu(format!(
                    "{what} of {bytes} bytes exceeds the {limit}-byte binding limit"
                )));
            }
            Ok(Bound {
                buffer: buf.raw(),
                range,
            })
        }
        None => Ok(Bound {
            buffer: stand_in.raw(),
            range: BindRange {
                offset: 0,
                size: 4,
                skip: 0,
            },
        }),
    }
}

/// `out = x / sqrt(mean(x²) + eps) (* weight)` per row of `cols` f32.
pub(crate) fn rms_norm(
    x: &GpuBuffer,
    rows: usize,
    cols: usize,
    weight: Option<&GpuBuffer>,
    eps: f32,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = x.context();
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline("rms_norm", "main", &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    ctx.capture(|| {
        let w = optional_binding(weight.map(|w| (w, cols * 4)), x, limit, "rms_norm weight")?;
        let l = RowLayout {
            base: 0,
            row_bytes: cols as u64 * 4,
        };
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(rows, &[l, l], limit, align, 1 << 30)? {
            let params = RmsNormParams {
                rows: to_u32(c.rows as u64, "rows")?,
                cols: to_u32(cols as u64, "cols")?,
                x_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                eps,
                has_weight: u32::from(weight.is_some()),
                _pad: [0; 2],
            };
            let storage = [
                Bound {
                    buffer: x.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: w.buffer,
                    range: w.range,
                },
                Bound {
                    buffer: out.raw(),
                    range: c.ranges[1],
                },
            ];
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, params.rows));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}

/// `out = softmax(x * scale + mask)` per row of `cols` f32. Mask values at or below -1e30
/// (incl. -inf) exclude their column; a row with every column excluded becomes all zeros.
pub(crate) fn softmax(
    x: &GpuBuffer,
    rows: usize,
    cols: usize,
    scale: f32,
    mask: Option<(&GpuBuffer, usize)>,
    out: &GpuBuffer,
) -> Result<()> {
    let ctx = x.context();
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let pipeline = ctx.pipeline("softmax", "main", &[])?;
    let (limit, align) = (ctx.binding_limit(), ctx.offset_align());
    let mask_rows = mask.map_or(1, |(_, r)| r);
    if mask_rows == 0 {
        return Err(TensorError::ShapeMismatch {
            op: "softmax",
            detail: "empty mask".into(),
        });
    }
    ctx.capture(|| {
        let m = optional_binding(
            mask.map(|(b, r)| (b, r * cols * 4)),
            x,
            limit,
            "softmax mask",
        )?;
        let l = RowLayout {
            base: 0,
            row_bytes: cols as u64 * 4,
        };
        let mut dispatches = Vec::new();
        for c in plan_row_chunks(rows, &[l, l], limit, align, 1 << 30)? {
            let params = SoftmaxParams {
                rows: to_u32(c.rows as u64, "rows")?,
                cols: to_u32(cols as u64, "cols")?,
                x_offset: to_u32(c.ranges[0].skip / 4, "offset")?,
                out_offset: to_u32(c.ranges[1].skip / 4, "offset")?,
                scale,
                has_mask: u32::from(mask.is_some()),
                mask_rows: to_u32(mask_rows as u64, "mask rows")?,
                row_base: to_u32(c.first_row as u64, "row")?,
            };
            let storage = [
                Bound {
                    buffer: x.raw(),
                    range: c.ranges[0],
                },
                Bound {
                    buffer: m.buffer,
                    range: m.range,
                },
                Bound {
                    buffer: out.raw(),
                    range: c.ranges[1],
                },
            ];
            dispatches.push(prepare(ctx, &pipeline, &storage, &params, params.rows));
        }
        submit(ctx, &dispatches)?;
        Ok(())
    })
}
