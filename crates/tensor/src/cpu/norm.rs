//! Row-wise kernels: RMS norm, layer norm, softmax (contracts and scalar twins in
//! `ops::norm` and `ops::softmax`).
// `dispatch!` expands to calls of `#[target_feature]` functions (SIMD kernel module).
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::math;
use super::simd::{Isa, Simd, dispatch, isa};
use crate::ops::{norm::reference as norm_ref, softmax};

const PARALLEL_MIN: usize = 1 << 16;
const TASK_ELEMS: usize = 1 << 14;

/// Rows per rayon task, or `None` when the whole input stays on the calling thread.
fn rows_per_task(len: usize, cols: usize) -> Option<usize> {
    assert!(
        cols > 0 && len.is_multiple_of(cols),
        "{len} elements are not rows of {cols}"
    );
    (len >= PARALLEL_MIN).then(|| (TASK_ELEMS / cols).max(1))
}

/// Runs `each(isa, x_rows, out_rows)` over matching runs of whole rows.
fn by_rows<F>(x: &[f32], out: &mut [f32], cols: usize, each: F)
where
    F: Fn(Isa, &[f32], &mut [f32]) + Sync,
{
    let isa = isa();
    match rows_per_task(x.len(), cols) {
        None => each(isa, x, out),
        Some(rows) => x
            .par_chunks(rows * cols)
            .zip(out.par_chunks_mut(rows * cols))
            .for_each(|(x, o)| each(isa, x, o)),
    }
}

/// Sum of `f(v)` over a row, two accumulators to hide FMA latency.
#[inline(always)]
fn row_sum<S: Simd>(s: S, x: &[f32], f: impl Fn(S::V, S::V) -> S::V) -> f32 {
    let (mut a0, mut a1) = (s.zero(), s.zero());
    let step = 2 * S::LANES;
    let full = x.len() - x.len() % step;
    for i in (0..full).step_by(step) {
        a0 = f(s.load(&x[i..]), a0);
        a1 = f(s.load(&x[i + S::LANES..]), a1);
    }
    let mut i = full;
    while i < x.len() {
        let end = (i + S::LANES).min(x.len());
        let v = if end - i == S::LANES {
            s.load(&x[i..])
        } else {
            s.load_partial(&x[i..end])
        };
        a0 = f(v, a0);
        i = end;
    }
    s.reduce_sum(s.add(a0, a1))
}

/// `out = x * k (* w) (+ b)` over one row, in that rounding order (ggml's norm, mul, add).
#[inline(always)]
fn scale_row<S: Simd>(
    s: S,
    x: &[f32],
    shift: f32,
    k: f32,
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [f32],
) {
    let (shift, k) = (s.splat(shift), s.splat(k));
    let mut i = 0;
    while i < x.len() {
        let end = (i + S::LANES).min(x.len());
        let full = end - i == S::LANES;
        let ld = |src: &[f32]| {
            if full {
                s.load(&src[i..])
            } else {
                s.load_partial(&src[i..end])
            }
        };
        let mut y = s.mul(s.sub(ld(x), shift), k);
        if let Some(w) = w {
            y = s.mul(y, ld(w));
        }
        if let Some(b) = b {
            y = s.add(y, ld(b));
        }
        if full {
            s.store(&mut out[i..], y);
        } else {
            s.store_partial(&mut out[i..end], y);
        }
        i = end;
    }
}

#[inline(always)]
fn rms_norm_simd<S: Simd>(
    s: S,
    x: &[f32],
    w: Option<&[f32]>,
    eps: f32,
    cols: usize,
    out: &mut [f32],
) {
    for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let sum = row_sum(s, xr, |v, acc| s.fma(v, v, acc));
        let mean = sum / cols as f32;
        let k = 1.0 / (mean + eps).sqrt();
        scale_row(s, xr, 0.0, k, w, None, or);
    }
}

fn rms_norm_rows(isa: Isa, x: &[f32], w: Option<&[f32]>, eps: f32, cols: usize, out: &mut [f32]) {
    dispatch!(isa, rms_norm_simd, norm_ref::rms_norm,
        (x: &[f32], w: Option<&[f32]>, eps: f32, cols: usize, out: &mut [f32]))
}

fn check(op: &str, x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, cols: usize, out: &[f32]) {
    assert_eq!(x.len(), out.len(), "{op}: input and output lengths differ");
    for p in [w, b].into_iter().flatten() {
        assert_eq!(
            p.len(),
            cols,
            "{op}: weight/bias of {} for rows of {cols}",
            p.len()
        );
    }
}

/// RMS norm of each row of `cols`: `x / sqrt(mean(x^2) + eps) * w`.
pub fn rms_norm(x: &[f32], w: Option<&[f32]>, eps: f32, cols: usize, out: &mut [f32]) {
    check("rms_norm", x, w, None, cols, out);
    by_rows(x, out, cols, |isa, x, o| {
        rms_norm_rows(isa, x, w, eps, cols, o)
    });
}

#[inline(always)]
fn layer_norm_simd<S: Simd>(
    s: S,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    cols: usize,
    out: &mut [f32],
) {
    for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let mean = row_sum(s, xr, |v, acc| s.add(v, acc)) / cols as f32;
        // Sum of squared deviations, with partial tail lanes masked out of the sum.
        let m = s.splat(mean);
        let full = cols - cols % S::LANES;
        let mut acc = s.zero();
        for i in (0..full).step_by(S::LANES) {
            let d = s.sub(s.load(&xr[i..]), m);
            acc = s.fma(d, d, acc);
        }
        let mut var_sum = s.reduce_sum(acc);
        for &v in &xr[full..] {
            var_sum += (v - mean) * (v - mean);
        }
        let k = 1.0 / (var_sum / cols as f32 + eps).sqrt();
        scale_row(s, xr, mean, k, w, b, or);
    }
}

fn layer_norm_rows(
    isa: Isa,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    cols: usize,
    out: &mut [f32],
) {
    dispatch!(isa, layer_norm_simd, norm_ref::layer_norm,
        (x: &[f32], w: Option<&[f32]>, b: Option<&[f32]>, eps: f32, cols: usize, out: &mut [f32]))
}

/// Layer norm of each row of `cols`: `(x - mean) / sqrt(var + eps) * w + b`.
pub fn layer_norm(
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    cols: usize,
    out: &mut [f32],
) {
    check("layer_norm", x, w, b, cols, out);
    by_rows(x, out, cols, |isa, x, o| {
        layer_norm_rows(isa, x, w, b, eps, cols, o)
    });
}

#[inline(always)]
fn softmax_simd<S: Simd>(s: S, x: &mut [f32], cols: usize) {
    for row in x.chunks_exact_mut(cols) {
        let full = cols - cols % S::LANES;
        let mut mv = s.splat(f32::NEG_INFINITY);
        for i in (0..full).step_by(S::LANES) {
            mv = s.max(mv, s.load(&row[i..]));
        }
        let max = row[full..].iter().fold(s.reduce_max(mv), |m, &v| m.max(v));
        if max == f32::NEG_INFINITY {
            row.fill(0.0); // nothing visible: no distribution, zeros (as the reference)
            continue;
        }
        let m = s.splat(max);
        let mut acc = s.zero();
        let mut i = 0;
        while i < cols {
            let end = (i + S::LANES).min(cols);
            if end - i == S::LANES {
                let e = math::exp(s, s.sub(s.load(&row[i..]), m));
                acc = s.add(acc, e);
                s.store(&mut row[i..], e);
            } else {
                // Padding lanes are 0: exp(0 - max) would pollute the sum, so sum only real lanes.
                let e = math::exp(s, s.sub(s.load_partial(&row[i..end]), m));
                s.store_partial(&mut row[i..end], e);
                acc = s.add(acc, s.load_partial(&row[i..end]));
            }
            i = end;
        }
        let inv = s.splat(1.0 / s.reduce_sum(acc));
        let mut chunks = row.chunks_exact_mut(S::LANES);
        for c in &mut chunks {
            let v = s.load(c);
            s.store(c, s.mul(v, inv));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = s.load_partial(rest);
            s.store_partial(rest, s.mul(v, inv));
        }
    }
}

fn softmax_chunk(isa: Isa, x: &mut [f32], cols: usize) {
    dispatch!(isa, softmax_simd, softmax::reference, (x: &mut [f32], cols: usize))
}

/// In place, softmax of each row of `cols`. A row that is all -inf becomes all zeros.
pub fn softmax_rows(x: &mut [f32], cols: usize) {
    let isa = isa();
    match rows_per_task(x.len(), cols) {
        None => softmax_chunk(isa, x, cols),
        Some(rows) => x
            .par_chunks_mut(rows * cols)
            .for_each(|c| softmax_chunk(isa, c, cols)),
    }
}
