//! Token grids: `[h·w, d]` rows in raster order, the layout a ViT's tokens have between the
//! patch embedding and the projector. Pooling and resizing work on that layout directly
//! (no transpose to channel planes and back), and the GPU kernels in `shaders/grid.wgsl`
//! compute the same sums in the same order.

use rayon::prelude::*;

/// Average of each `kh × kw` block of a `[h·w, d]` grid into `[(h/kh)·(w/kw), d]`: the cells
/// summed row by row, then divided by `kh·kw` (as ggml's 2-D average pool).
pub fn pool_avg(x: &[f32], [h, w, d]: [usize; 3], [kh, kw]: [usize; 2], out: &mut [f32]) {
    assert!(
        kh > 0 && kw > 0 && h.is_multiple_of(kh) && w.is_multiple_of(kw),
        "pool_avg: {kh}x{kw} blocks on a {h}x{w} grid"
    );
    assert_eq!(x.len(), h * w * d, "pool_avg: input length");
    let (oh, ow) = (h / kh, w / kw);
    assert_eq!(out.len(), oh * ow * d, "pool_avg: output length");
    if d == 0 {
        return;
    }
    let area = (kh * kw) as f32;
    out.par_chunks_mut(d).enumerate().for_each(|(o, dst)| {
        let (oy, ox) = (o / ow, o % ow);
        dst.fill(0.0);
        for y in oy * kh..(oy + 1) * kh {
            for xx in ox * kw..(ox + 1) * kw {
                let src = &x[(y * w + xx) * d..(y * w + xx + 1) * d];
                for (a, &v) in dst.iter_mut().zip(src) {
                    *a += v;
                }
            }
        }
        for a in dst.iter_mut() {
            *a /= area;
        }
    });
}

/// Each `k × k` block of a `[h·w, d]` grid as one row of `[(h/k)·(w/k), d·k·k]`, ordered
/// `[channel, ky, kx]`: the im2col of the grid's channel planes under a stride-`k` kernel
/// (Pixtral's patch merger), without transposing the grid first.
pub fn unfold(x: &[f32], [h, w, d]: [usize; 3], k: usize, out: &mut [f32]) {
    assert!(
        k > 0 && h.is_multiple_of(k) && w.is_multiple_of(k),
        "unfold: {k}x{k} blocks on a {h}x{w} grid"
    );
    assert_eq!(x.len(), h * w * d, "unfold: input length");
    assert_eq!(out.len(), x.len(), "unfold: output length");
    let (ow, wide) = (w / k, d * k * k);
    if wide == 0 {
        return;
    }
    out.par_chunks_mut(wide).enumerate().for_each(|(o, dst)| {
        let (ty, tx) = (o / ow, o % ow);
        for ky in 0..k {
            for kx in 0..k {
                let cell = (ty * k + ky) * w + tx * k + kx;
                for (c, &v) in x[cell * d..(cell + 1) * d].iter().enumerate() {
                    dst[c * k * k + ky * k + kx] = v;
                }
            }
        }
    });
}

/// Source cells and weight of output index `i` for an align-corners resize of `n_in` cells to
/// `n_out` (PyTorch's `align_corners=True`; a one-cell side repeats its cell).
pub fn align_corners_taps(i: usize, n_out: usize, n_in: usize) -> (usize, usize, f32) {
    let scale = if n_out > 1 && n_in > 1 {
        (n_out - 1) as f32 / (n_in - 1) as f32
    } else {
        n_out as f32 / n_in as f32
    };
    let s = i as f32 / scale;
    let f = s.floor();
    let lo = (f.max(0.0) as usize).min(n_in - 1);
    let hi = (lo + 1).min(n_in - 1);
    (lo, hi, (s - f).clamp(0.0, 1.0))
}

/// Bilinear align-corners resize of a `[h·w, d]` grid to `[oh·ow, d]` (how Qwen3-VL fits its
/// learned position table to an image's patch grid).
pub fn resize_bilinear(x: &[f32], [h, w, d]: [usize; 3], [oh, ow]: [usize; 2], out: &mut [f32]) {
    assert!(h > 0 && w > 0, "resize_bilinear: empty {h}x{w} grid");
    assert_eq!(x.len(), h * w * d, "resize_bilinear: input length");
    assert_eq!(out.len(), oh * ow * d, "resize_bilinear: output length");
    if d == 0 {
        return;
    }
    out.par_chunks_mut(d).enumerate().for_each(|(o, dst)| {
        let (y0, y1, dy) = align_corners_taps(o / ow, oh, h);
        let (x0, x1, dx) = align_corners_taps(o % ow, ow, w);
        let row = |yy: usize, xx: usize| &x[(yy * w + xx) * d..(yy * w + xx + 1) * d];
        let (a, b, c, e) = (row(y0, x0), row(y0, x1), row(y1, x0), row(y1, x1));
        for (k, v) in dst.iter_mut().enumerate() {
            *v = a[k] * (1.0 - dx) * (1.0 - dy)
                + b[k] * dx * (1.0 - dy)
                + c[k] * (1.0 - dx) * dy
                + e[k] * dx * dy;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_avg_matches_the_channel_plane_pool() {
        let (h, w, d, k) = (6, 4, 3, 2);
        let x: Vec<f32> = (0..h * w * d).map(|v| (v as f32 * 0.37).sin()).collect();
        let mut got = vec![0f32; h * w * d / (k * k)];
        pool_avg(&x, [h, w, d], [k, k], &mut got);
        let mut planes = vec![0f32; x.len()];
        super::super::transpose(&x, h * w, d, &mut planes);
        let mut pooled = vec![0f32; got.len()];
        super::super::avg_pool2d(&planes, [d, h, w], k, k, &mut pooled);
        let mut want = vec![0f32; got.len()];
        super::super::transpose(&pooled, d, got.len() / d, &mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn unfold_is_the_im2col_of_the_channel_planes() {
        let (h, w, d, k) = (4, 6, 3, 2);
        let x: Vec<f32> = (0..h * w * d).map(|v| v as f32).collect();
        let mut got = vec![0f32; x.len()];
        unfold(&x, [h, w, d], k, &mut got);
        let mut planes = vec![0f32; x.len()];
        super::super::transpose(&x, h * w, d, &mut planes);
        let mut want = vec![0f32; x.len()];
        let p = super::super::Conv2dParams::patch(k);
        super::super::conv::im2col_2d(&planes, [d, h, w], [k, k], &p, w / k, 0, &mut want);
        assert_eq!(got, want);
    }

    #[test]
    fn resize_keeps_corners_and_identity() {
        let x: Vec<f32> = (0..2 * 3 * 2).map(|v| v as f32).collect();
        let mut same = vec![0f32; x.len()];
        resize_bilinear(&x, [2, 3, 2], [2, 3], &mut same);
        assert_eq!(same, x);
        let mut up = vec![0f32; 3 * 5 * 2];
        resize_bilinear(&x, [2, 3, 2], [3, 5], &mut up);
        assert_eq!(&up[..2], &x[..2]);
        assert_eq!(&up[up.len() - 2..], &x[x.len() - 2..]);
    }
}
