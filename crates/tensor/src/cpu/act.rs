//! Activation kernels (contracts and scalar twins in `ops::act`).
// `dispatch!` expands to calls of `#[target_feature]` functions (SIMD kernel module).
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::math::{self, ErfCoefficients};
use super::simd::{F16Table, Isa, Simd, dispatch, isa};
use crate::ops::act::{GELU_COEF_A, GELU_QUICK_COEF, GELU_SQRT_2_OVER_PI, reference};

/// Below this many elements a kernel stays on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;
/// Elements per rayon task.
const CHUNK: usize = 1 << 14;

/// An activation applied in place (the kernels below; the scalar twins in `ops::act`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Silu,
    GeluTanh,
    GeluErf,
    GeluQuick,
}

#[inline(always)]
fn apply<S: Simd>(s: S, act: Act, erf: &ErfCoefficients, x: S::V) -> S::V {
    match act {
        Act::Silu => s.mul(x, math::sigmoid(s, x)),
        // 0.5 x (1 + tanh(u)) == x * sigmoid(2u): no cancellation, one exp.
        Act::GeluTanh => {
            let x2 = s.mul(x, x);
            let inner = s.fma(s.splat(GELU_COEF_A), x2, s.splat(1.0));
            let two_u = s.mul(s.mul(x, inner), s.splat(2.0 * GELU_SQRT_2_OVER_PI));
            s.mul(x, math::sigmoid(s, two_u))
        }
        Act::GeluErf => {
            let z = s.mul(x, s.splat(std::f32::consts::FRAC_1_SQRT_2));
            s.mul(s.mul(x, s.splat(0.5)), math::one_plus_erf(s, erf, z))
        }
        Act::GeluQuick => s.mul(x, math::sigmoid(s, s.mul(x, s.splat(GELU_QUICK_COEF)))),
    }
}

// The `match act` sits outside the loops so each loop is compiled for one activation.
#[inline(always)]
fn map_simd<S: Simd>(s: S, act: Act, x: &mut [f32]) {
    let erf = math::erf_coefficients();
    #[inline(always)]
    fn run<S: Simd>(s: S, act: Act, erf: &ErfCoefficients, x: &mut [f32]) {
        let mut chunks = x.chunks_exact_mut(S::LANES);
        for c in &mut chunks {
            let v = s.load(c);
            s.store(c, apply(s, act, erf, v));
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let v = s.load_partial(rest);
            s.store_partial(rest, apply(s, act, erf, v));
        }
    }
    match act {
        Act::Silu => run(s, Act::Silu, &erf, x),
        Act::GeluTanh => run(s, Act::GeluTanh, &erf, x),
        Act::GeluErf => run(s, Act::GeluErf, &erf, x),
        Act::GeluQuick => run(s, Act::GeluQuick, &erf, x),
    }
}

fn map_scalar(act: Act, x: &mut [f32]) {
    match act {
        Act::Silu => reference::silu(x),
        Act::GeluTanh => reference::gelu_tanh(x),
        Act::GeluErf => reference::gelu_erf(x),
        Act::GeluQuick => reference::gelu_quick(x),
    }
}

/// `act` over `x` on the calling thread (element by element: the result of each value does
/// not depend on the slice it is in).
pub(crate) fn map_chunk(isa: Isa, act: Act, x: &mut [f32]) {
    dispatch!(isa, map_simd, map_scalar, (act: Act, x: &mut [f32]))
}

pub(crate) fn map(act: Act, x: &mut [f32]) {
    let isa = isa();
    if x.len() < PARALLEL_MIN {
        map_chunk(isa, act, x);
    } else {
        x.par_chunks_mut(CHUNK).for_each(|c| map_chunk(isa, act, c));
    }
}

/// In place: `x * sigmoid(x)`.
pub fn silu(x: &mut [f32]) {
    map(Act::Silu, x)
}
/// In place: GELU, tanh approximation (ggml `gelu`).
pub fn gelu_tanh(x: &mut [f32]) {
    map(Act::GeluTanh, x)
}
/// In place: GELU with the exact erf.
pub fn gelu_erf(x: &mut [f32]) {
    map(Act::GeluErf, x)
}
/// In place: `x * sigmoid(1.702 x)`.
pub fn gelu_quick(x: &mut [f32]) {
    map(Act::GeluQuick, x)
}

#[inline(always)]
fn gated_simd<S: Simd>(s: S, act: Act, gate: &[f32], up: &[f32], out: &mut [f32]) {
    let erf = math::erf_coefficients();
    let n = out.len();
    let (gate, up) = (&gate[..n], &up[..n]);
    let full = n - n % S::LANES;
    for i in (0..full).step_by(S::LANES) {
        let g = apply(s, act, &erf, s.load(&gate[i..]));
        s.store(&mut out[i..], s.mul(g, s.load(&up[i..])));
    }
    if full < n {
        let g = apply(s, act, &erf, s.load_partial(&gate[full..]));
        let y = s.mul(g, s.load_partial(&up[full..]));
        s.store_partial(&mut out[full..], y);
    }
}

fn gated_scalar(act: Act, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match act {
        Act::Silu => reference::swiglu(gate, up, out),
        _ => reference::geglu(gate, up, out),
    }
}

fn gated_chunk(isa: Isa, act: Act, gate: &[f32], up: &[f32], out: &mut [f32]) {
    dispatch!(isa, gated_simd, gated_scalar, (act: Act, gate: &[f32], up: &[f32], out: &mut [f32]))
}

fn gated(act: Act, gate: &[f32], up: &[f32], out: &mut [f32]) {
    split_gated("gated activation", gate, up, out, |isa, g, u, o| {
        gated_chunk(isa, act, g, u, o)
    })
}

/// Checks that `gate`, `up` and `out` have one length, then runs `chunk(isa, gate, up, out)`
/// over them: on the calling thread when short, else over rayon in chunks of [`CHUNK`].
fn split_gated(
    op: &str,
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
    chunk: impl Fn(Isa, &[f32], &[f32], &mut [f32]) + Sync,
) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "{op}: gate {}, up {}, out {} elements",
        gate.len(),
        up.len(),
        out.len()
    );
    let isa = isa();
    if out.len() < PARALLEL_MIN {
        chunk(isa, gate, up, out);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
            .for_each(|(o, (g, u))| chunk(isa, g, u, o));
    }
}

/// `out = silu(gate) * up` (all the same length; panics otherwise).
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    gated(Act::Silu, gate, up, out)
}
/// `out = gelu_tanh(gate) * up` (all the same length; panics otherwise).
pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    gated(Act::GeluTanh, gate, up, out)
}

/// ggml's tanh-approximation GELU in f32 (the value its CPU backend tabulates).
fn gelu_tanh_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + (GELU_SQRT_2_OVER_PI * x * (1.0 + GELU_COEF_A * x * x)).tanh())
}

/// GELU of every f16 value (indexed by its bits), rounded to f16 and widened back to f32:
/// ggml's CPU GELU is a lookup in this table. Built once per process.
pub fn gelu_f16_table() -> &'static [f32] {
    &gelu_table().0
}

fn gelu_table() -> &'static F16Table {
    static TABLE: std::sync::OnceLock<Box<F16Table>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new(F16Table([0.0; 1 << 16]));
        for (bits, v) in t.0.iter_mut().enumerate() {
            let x = half::f16::from_bits(bits as u16).to_f32();
            *v = half::f16::from_f32(gelu_tanh_f32(x)).to_f32();
        }
        t
    })
}

/// Below this gate value ggml's table GEGLU gives 0, above its negation the gate itself.
pub const GEGLU_TABLE_SATURATION: f32 = 10.0;

/// `out = gelu(gate) * up` exactly as ggml's CPU GEGLU: the gate is rounded to f16, looked
/// up in [`gelu_f16_table`], and saturates outside [-10, 10] (0 below, the gate above).
/// Without it Gemma 3's logits drift from llama.cpp's by ~1.4.
pub fn geglu_f16_table(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let table = gelu_table();
    split_gated("geglu_f16_table", gate, up, out, |isa, g, u, o| {
        geglu_table_chunk(isa, table, g, u, o)
    })
}

fn geglu_table_chunk(isa: Isa, table: &F16Table, gate: &[f32], up: &[f32], out: &mut [f32]) {
    dispatch!(isa, geglu_table_simd, geglu_table_scalar, (table: &F16Table, gate: &[f32], up: &[f32], out: &mut [f32]))
}

fn geglu_table_scalar(table: &F16Table, gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = if g <= -GEGLU_TABLE_SATURATION {
            0.0
        } else if g >= GEGLU_TABLE_SATURATION {
            g * u
        } else {
            table.0[half::f16::from_f32(g).to_bits() as usize] * u
        };
    }
}

#[inline(always)]
fn geglu_table_simd<S: Simd>(s: S, table: &F16Table, gate: &[f32], up: &[f32], out: &mut [f32]) {
    // `g <= -10` is `g < (the float after -10)`; NaN gates take the table (NaN), as ggml's.
    let below = s.splat((-GEGLU_TABLE_SATURATION).next_up());
    let above = s.splat(GEGLU_TABLE_SATURATION);
    let one = |g: S::V, u: S::V| {
        let gelu = s.select_lt(g, above, s.lookup_f16(table, g), g);
        s.select_lt(g, below, s.zero(), s.mul(gelu, u))
    };
    let n = out.len();
    let full = n - n % S::LANES;
    for i in (0..full).step_by(S::LANES) {
        s.store(&mut out[i..], one(s.load(&gate[i..]), s.load(&up[i..])));
    }
    if full < n {
        let y = one(s.load_partial(&gate[full..]), s.load_partial(&up[full..]));
        s.store_partial(&mut out[full..], y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 gate value (and the saturation edges, NaN, infinities, odd up values) on
    /// each SIMD path equals the scalar lookup bit for bit.
    #[test]
    fn table_geglu_simd_matches_scalar() {
        let mut gate: Vec<f32> = (0..=u16::MAX)
            .map(|b| half::f16::from_bits(b).to_f32())
            .collect();
        let edge = GEGLU_TABLE_SATURATION;
        gate.extend([
            -edge,
            edge,
            (-edge).next_up(),
            edge.next_down(),
            1e-8,
            -1e-8,
            7.77777,
        ]);
        gate.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e6, -1e6]);
        let up: Vec<f32> = (0..gate.len())
            .map(|i| match i % 5 {
                0 => -1.5,
                1 => f32::INFINITY,
                2 => 0.0,
                3 => -0.0,
                _ => 3.25,
            })
            .collect();
        let mut want = vec![0.0; gate.len()];
        geglu_table_scalar(gelu_table(), &gate, &up, &mut want);
        for isa in Isa::available() {
            let mut got = vec![0.0; gate.len()];
            super::super::simd::with_isa(isa, || geglu_f16_table(&gate, &up, &mut got));
            for i in 0..gate.len() {
                assert!(
                    got[i].to_bits() == want[i].to_bits() || (got[i].is_nan() && want[i].is_nan()),
                    "{isa:?}: gate {} up {}: {} vs {}",
                    gate[i],
                    up[i],
                    got[i],
                    want[i]
                );
            }
        }
    }

    #[test]
    fn table_geglu_is_close_to_exact_gelu() {
        let gate: Vec<f32> = (-1200..1200).map(|i| i as f32 / 100.0).collect();
        let up = vec![1.0; gate.len()];
        let mut out = vec![0.0; gate.len()];
        geglu_f16_table(&gate, &up, &mut out);
        for (g, o) in gate.iter().zip(&out) {
            let exact = if *g <= -10.0 {
                0.0
            } else if *g >= 10.0 {
                *g
            } else {
                gelu_tanh_f32(*g)
            };
            assert!(
                (o - exact).abs() <= 1e-2 * exact.abs().max(1e-2),
                "{g}: {o} vs {exact}"
            );
        }
    }
}
