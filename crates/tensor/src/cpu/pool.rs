//! Average / max pooling with ggml's semantics.
//!
//! 2-D (`ggml_pool_2d`): input `[C, H, W]`, output `[C, OH, OW]`,
//! `OH = (H + 2·pad - k) / stride + 1`; window cells outside the input are skipped, and the
//! average always divides by the full `kh·kw` (so padded borders are damped, as in ggml).
//! 1-D (`ggml_pool_1d`): rows `[R, L]`, the average divides by the cells actually inside.

use rayon::prelude::*;

pub use crate::ops::pool::{Pool2dParams, PoolKind};

/// The cells of a window of `k` starting at `start` that lie inside `0..n`.
fn inside(start: isize, k: usize, n: usize) -> std::ops::Range<usize> {
    let lo = start.clamp(0, n as isize) as usize;
    let hi = (start + k as isize).clamp(0, n as isize) as usize;
    lo..hi.max(lo)
}

/// 2-D pooling of `[c, h, w]` into `out` `[c, OH, OW]`.
pub fn pool2d(
    kind: PoolKind,
    input: &[f32],
    [c, h, w]: [usize; 3],
    p: &Pool2dParams,
    out: &mut [f32],
) {
    let [oh, ow] = p
        .out_size(h, w)
        .unwrap_or_else(|| panic!("pool2d: window {p:?} does not fit {h}x{w}"));
    assert_eq!(input.len(), c * h * w, "pool2d: input length");
    assert_eq!(out.len(), c * oh * ow, "pool2d: output length");
    if out.is_empty() {
        return;
    }
    let [kh, kw] = p.kernel;
    let area = (kh * kw) as f32;
    out.par_chunks_mut(oh * ow)
        .zip(input.par_chunks(h * w))
        .for_each(|(dst, plane)| {
            for oy in 0..oh {
                let y0 = (oy * p.stride[0]) as isize - p.padding[0] as isize;
                for ox in 0..ow {
                    let x0 = (ox * p.stride[1]) as isize - p.padding[1] as isize;
                    let mut acc = match kind {
                        PoolKind::Avg => 0.0,
                        PoolKind::Max => -f32::MAX,
                    };
                    for y in inside(y0, kh, h) {
                        let row = &plane[y * w..(y + 1) * w];
                        for &v in &row[inside(x0, kw, w)] {
                            match kind {
                                PoolKind::Avg => acc += v,
                                PoolKind::Max => acc = acc.max(v),
                            }
                        }
                    }
                    dst[oy * ow + ox] = match kind {
                        PoolKind::Avg => acc / area,
                        PoolKind::Max => acc,
                    };
                }
            }
        });
}

/// Average pooling with a `k × k` window and stride `s` (no padding).
pub fn avg_pool2d(input: &[f32], chw: [usize; 3], k: usize, s: usize, out: &mut [f32]) {
    pool2d(PoolKind::Avg, input, chw, &Pool2dParams::new(k, s), out);
}

/// 1-D pooling of each of the `rows` rows of length `l`: output `(l + 2·pad - k) / s + 1`
/// values per row.
pub fn pool1d(
    kind: PoolKind,
    input: &[f32],
    [rows, l]: [usize; 2],
    k: usize,
    s: usize,
    pad: usize,
    out: &mut [f32],
) {
    assert!(k > 0 && s > 0, "pool1d: zero kernel or stride");
    let lo = (l + 2 * pad)
        .checked_sub(k)
        .map(|r| r / s + 1)
        .unwrap_or_else(|| panic!("pool1d: window {k} does not fit length {l}"));
    assert_eq!(input.len(), rows * l, "pool1d: input length");
    assert_eq!(out.len(), rows * lo, "pool1d: output length");
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(lo)
        .zip(input.par_chunks(l))
        .for_each(|(dst, row)| {
            for (o, d) in dst.iter_mut().enumerate() {
                let x0 = (o * s) as isize - pad as isize;
                let cells = &row[inside(x0, k, l)];
                *d = match kind {
                    PoolKind::Avg if cells.is_empty() => 0.0,
                    PoolKind::Avg => cells.iter().sum::<f32>() / cells.len() as f32,
                    PoolKind::Max => cells.iter().copied().fold(-f32::MAX, f32::max),
                };
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avg_pool_2x2() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let mut out = [0f32; 4];
        avg_pool2d(&x, [1, 4, 4], 2, 2, &mut out);
        assert_eq!(out, [2.5, 4.5, 10.5, 12.5]);
    }

    #[test]
    fn padded_avg_divides_by_full_window_and_max_skips_padding() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let p = Pool2dParams {
            padding: [1, 1],
            ..Pool2dParams::new(2, 2)
        };
        let mut out = [0f32; 4];
        pool2d(PoolKind::Avg, &x, [1, 2, 2], &p, &mut out);
        assert_eq!(out, [0.25, 0.5, 0.75, 1.0]);
        let neg = [-1.0, -2.0, -3.0, -4.0];
        pool2d(PoolKind::Max, &neg, [1, 2, 2], &p, &mut out);
        assert_eq!(out, [-1.0, -2.0, -3.0, -4.0]);
    }

    #[test]
    fn pool1d_average_counts_inside_cells() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = [0f32; 3];
        pool1d(PoolKind::Avg, &x, [1, 5], 2, 2, 1, &mut out);
        assert_eq!(out, [1.0, 2.5, 4.5]);
    }
}
