//! Scalar reference dot products: the numeric contract of every kernel.
//!
//! Per block (legacy types) or super-block (K-quants, IQ4_XS) the integer sum of
//! `level x activation` products is formed exactly (sub-block sums times their integer
//! scales for the K-quants); it is then scaled in f32 with ggml's formula and accumulated in a
//! single f32 in block order. SIMD kernels compute the same integer sums and may only differ in
//! the f32 summation order.

use super::DotFn;
use super::scalar_iq;
use super::values;
use crate::DType;
use crate::quant::blocks::{
    Block, BlockIQ4NL, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0,
    BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1, BlockQ8K, as_blocks,
};

/// The scalar kernel of `weight`, if it has an integer dot product.
pub(super) fn dot_kernel(weight: DType) -> Option<DotFn> {
    Some(match weight {
        DType::Q4_0 => |w, a| typed(w, a, dot_q4_0),
        DType::Q4_1 => |w, a| typed(w, a, dot_q4_1),
        DType::Q5_0 => |w, a| typed(w, a, dot_q5_0),
        DType::Q5_1 => |w, a| typed(w, a, dot_q5_1),
        DType::Q8_0 => |w, a| typed(w, a, dot_q8_0),
        DType::IQ4NL => |w, a| typed(w, a, dot_iq4nl),
        DType::Q2K => |w, a| typed(w, a, dot_q2k),
        DType::Q3K => |w, a| typed(w, a, dot_q3k),
        DType::Q4K => |w, a| typed(w, a, dot_q4k),
        DType::Q5K => |w, a| typed(w, a, dot_q5k),
        DType::Q6K => |w, a| typed(w, a, dot_q6k),
        DType::IQ4XS => |w, a| typed(w, a, dot_iq4xs),
        DType::IQ2XXS => |w, a| typed(w, a, scalar_iq::dot_iq2xxs),
        DType::IQ2XS => |w, a| typed(w, a, scalar_iq::dot_iq2xs),
        DType::IQ2S => |w, a| typed(w, a, scalar_iq::dot_iq2s),
        DType::IQ3XXS => |w, a| typed(w, a, scalar_iq::dot_iq3xxs),
        DType::IQ3S => |w, a| typed(w, a, scalar_iq::dot_iq3s),
        DType::IQ1S => |w, a| typed(w, a, scalar_iq::dot_iq1s),
        DType::IQ1M => |w, a| typed(w, a, scalar_iq::dot_iq1m),
        DType::TQ1_0 => |w, a| typed(w, a, scalar_iq::dot_tq1_0),
        DType::TQ2_0 => |w, a| typed(w, a, scalar_iq::dot_tq2_0),
        DType::MXFP4 => |w, a| typed(w, a, scalar_iq::dot_mxfp4),
        _ => return None,
    })
}

/// Views both byte slices as blocks (lengths were checked by the caller; a malformed length
/// gives 0 rather than a panic).
fn typed<W: Block, A: Block>(w: &[u8], a: &[u8], f: fn(&[W], &[A]) -> f32) -> f32 {
    match (as_blocks::<W>(w), as_blocks::<A>(a)) {
        (Ok(w), Ok(a)) => f(&w, &a),
        _ => 0.0,
    }
}

/// Integer dot product of levels with activations.
#[inline]
fn idot<L: Copy + Into<i32>>(levels: &[L], act: &[i8]) -> i32 {
    levels
        .iter()
        .zip(act)
        .map(|(&l, &a)| l.into() * i32::from(a))
        .sum()
}

/// Sum of the activations of 32-value sub-block `j` from the Q8_K sums of 16.
#[inline]
fn bsum32(y: &BlockQ8K, j: usize) -> i32 {
    i32::from(y.bsums[2 * j]) + i32::from(y.bsums[2 * j + 1])
}

pub(super) fn dot_q4_0(w: &[BlockQ4_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = idot(&values::q4_0(x), &y.qs);
        sum += sumi as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sum
}

pub(super) fn dot_q4_1(w: &[BlockQ4_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = idot(&values::q4_1(x), &y.qs);
        sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

pub(super) fn dot_q5_0(w: &[BlockQ5_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = idot(&values::q5_0(x), &y.qs);
        sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32;
    }
    sum
}

pub(super) fn dot_q5_1(w: &[BlockQ5_1], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = idot(&values::q5_1(x), &y.qs);
        sum += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sum
}

pub(super) fn dot_q8_0(w: &[BlockQ8_0], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = idot(&x.qs, &y.qs);
        sum += sumi as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sum
}

pub(super) fn dot_iq4nl(w: &[BlockIQ4NL], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sumi = idot(&values::iq4nl(x), &y.qs);
        sum += (y.d.to_f32() * x.d.to_f32()) * sumi as f32;
    }
    sum
}

pub(super) fn dot_q2k(w: &[BlockQ2K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (levels, scales) = values::q2k(x);
        let (mut isum, mut summs) = (0i32, 0i32);
        for (j, &(sc, m)) in scales.iter().enumerate() {
            let r = 16 * j..16 * j + 16;
            isum += i32::from(sc) * idot(&levels[r.clone()], &y.qs[r]);
            summs += i32::from(m) * i32::from(y.bsums[j]);
        }
        let dall = y.d * x.d.to_f32();
        let dmin = y.d * x.dmin.to_f32();
        sum += dall * isum as f32 - dmin * summs as f32;
    }
    sum
}

/// Q3_K and Q6_K share everything but the level unpacking: 16 sub-blocks of 16 levels, each
/// with a signed integer scale, one f16 super-block scale `d`, no mins.
fn dot_k16(levels: &[i8; 256], scales: &[i8; 16], d: f32, y: &BlockQ8K) -> f32 {
    let isum: i32 = (0..16)
        .map(|j| {
            let r = 16 * j..16 * j + 16;
            i32::from(scales[j]) * idot(&levels[r.clone()], &y.qs[r])
        })
        .sum();
    d * y.d * isum as f32
}

pub(super) fn dot_q3k(w: &[BlockQ3K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (levels, scales) = values::q3k(x);
        sum += dot_k16(&levels, &scales, x.d.to_f32(), y);
    }
    sum
}

/// Q4_K and Q5_K share everything but the level unpacking.
fn dot_k_with_mins(
    levels: &[u8; 256],
    scales: &[(u8, u8); 8],
    d: f32,
    dmin: f32,
    y: &BlockQ8K,
) -> f32 {
    let (mut isum, mut summs) = (0i32, 0i32);
    for (j, &(sc, m)) in scales.iter().enumerate() {
        let r = 32 * j..32 * j + 32;
        isum += i32::from(sc) * idot(&levels[r.clone()], &y.qs[r]);
        summs += i32::from(m) * bsum32(y, j);
    }
    d * y.d * isum as f32 - dmin * y.d * summs as f32
}

pub(super) fn dot_q4k(w: &[BlockQ4K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (levels, scales) = values::q4k(x);
        sum += dot_k_with_mins(&levels, &scales, x.d.to_f32(), x.dmin.to_f32(), y);
    }
    sum
}

pub(super) fn dot_q5k(w: &[BlockQ5K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (levels, scales) = values::q5k(x);
        sum += dot_k_with_mins(&levels, &scales, x.d.to_f32(), x.dmin.to_f32(), y);
    }
    sum
}

pub(super) fn dot_q6k(w: &[BlockQ6K], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (levels, scales) = values::q6k(x);
        sum += dot_k16(&levels, &scales, x.d.to_f32(), y);
    }
    sum
}

pub(super) fn dot_iq4xs(w: &[BlockIQ4XS], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (levels, scales) = values::iq4xs(x);
        let isum: i32 = (0..8)
            .map(|j| {
                let r = 32 * j..32 * j + 32;
                i32::from(scales[j]) * idot(&levels[r.clone()], &y.qs[r])
            })
            .sum();
        sum += x.d.to_f32() * y.d * isum as f32;
    }
    sum
}
