//! In-place binary elementwise kernels (contracts and scalar twins in `ops::elementwise`).
// `dispatch!` expands to calls of `#[target_feature]` functions (SIMD kernel module).
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::simd::{Isa, Simd, dispatch, isa};
use crate::ops::elementwise::reference;

const PARALLEL_MIN: usize = 1 << 16;
const CHUNK: usize = 1 << 14;

#[derive(Clone, Copy)]
enum Bin {
    Add,
    Mul,
}

#[inline(always)]
fn binary_simd<S: Simd>(s: S, op: Bin, a: &mut [f32], b: &[f32]) {
    #[inline(always)]
    fn run<S: Simd>(s: S, f: impl Fn(S::V, S::V) -> S::V, a: &mut [f32], b: &[f32]) {
        let n = a.len();
        let b = &b[..n];
        let full = n - n % S::LANES;
        for i in (0..full).step_by(S::LANES) {
            let y = f(s.load(&a[i..]), s.load(&b[i..]));
            s.store(&mut a[i..], y);
        }
        if full < n {
            let y = f(s.load_partial(&a[full..]), s.load_partial(&b[full..]));
            s.store_partial(&mut a[full..], y);
        }
    }
    match op {
        Bin::Add => run(s, |x, y| s.add(x, y), a, b),
        Bin::Mul => run(s, |x, y| s.mul(x, y), a, b),
    }
}

fn binary_scalar(op: Bin, a: &mut [f32], b: &[f32]) {
    match op {
        Bin::Add => reference::add(a, b),
        Bin::Mul => reference::mul(a, b),
    }
}

fn binary_chunk(isa: Isa, op: Bin, a: &mut [f32], b: &[f32]) {
    dispatch!(isa, binary_simd, binary_scalar, (op: Bin, a: &mut [f32], b: &[f32]))
}

fn binary(isa: Isa, op: Bin, a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "elementwise operands differ in length");
    if a.len() < PARALLEL_MIN {
        binary_chunk(isa, op, a, b);
    } else {
        a.par_chunks_mut(CHUNK)
            .zip(b.par_chunks(CHUNK))
            .for_each(|(a, b)| binary_chunk(isa, op, a, b));
    }
}

/// `a += b` (same length; panics otherwise).
pub fn add(a: &mut [f32], b: &[f32]) {
    binary(isa(), Bin::Add, a, b)
}

/// `a *= b` (same length; panics otherwise).
pub fn mul(a: &mut [f32], b: &[f32]) {
    binary(isa(), Bin::Mul, a, b)
}

/// Applies `op` with `row` to every row of `a` (`a.len()` a multiple of `row.len()`).
fn rows(op: Bin, a: &mut [f32], row: &[f32]) {
    let cols = row.len();
    assert!(
        cols > 0 && a.len().is_multiple_of(cols),
        "broadcast row of {cols} over {} elements",
        a.len()
    );
    let isa = isa();
    let per_task = (CHUNK / cols).max(1) * cols;
    let each = |chunk: &mut [f32]| {
        for r in chunk.chunks_exact_mut(cols) {
            binary_chunk(isa, op, r, row);
        }
    };
    if a.len() < PARALLEL_MIN {
        each(a);
    } else {
        a.par_chunks_mut(per_task).for_each(each);
    }
}

/// `a[r, :] += row` for every row r of `a` (`a.len()` a multiple of `row.len()`).
pub fn add_rows(a: &mut [f32], row: &[f32]) {
    rows(Bin::Add, a, row)
}

/// `a[r, :] *= row` for every row r of `a` (`a.len()` a multiple of `row.len()`).
pub fn mul_rows(a: &mut [f32], row: &[f32]) {
    rows(Bin::Mul, a, row)
}

#[inline(always)]
fn scale_simd<S: Simd>(s: S, a: &mut [f32], k: f32) {
    let kv = s.splat(k);
    let mut chunks = a.chunks_exact_mut(S::LANES);
    for c in &mut chunks {
        let v = s.load(c);
        s.store(c, s.mul(v, kv));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let v = s.load_partial(rest);
        s.store_partial(rest, s.mul(v, kv));
    }
}

fn scale_chunk(isa: Isa, a: &mut [f32], k: f32) {
    dispatch!(isa, scale_simd, reference::scale, (a: &mut [f32], k: f32))
}

/// `a *= s`.
pub fn scale(a: &mut [f32], s: f32) {
    let isa = isa();
    if a.len() < PARALLEL_MIN {
        scale_chunk(isa, a, s);
    } else {
        a.par_chunks_mut(CHUNK).for_each(|c| scale_chunk(isa, c, s));
    }
}
