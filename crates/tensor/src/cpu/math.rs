//! Vector transcendental functions built from [`Simd`] primitives: `exp`, `sigmoid`, `erf`.
//!
//! Accuracy (checked in tests against f64): `exp` relative error < 2e-7 over the normal
//! range, `erf` absolute error < 1e-7 everywhere.
// `dispatch!` expands to calls of `#[target_feature]` functions (SIMD kernel module).
#![allow(unsafe_code)]

use std::sync::OnceLock;

use super::simd::Simd;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// Below this exp(x) is under the smallest normal f32 (2^-126): we return 0.
const EXP_MIN_X: f32 = -87.336_54;
/// Above this `n` would reach 128; we saturate to exp(EXP_MAX_X) ~ 2.2e38.
const EXP_MAX_X: f32 = 88.3;

/// How `e^r` is approximated on the reduced range |r| <= ln2/2, and how ln 2 is split so that
/// `x - n*ln2` stays accurate. Two choices are kept because the golden tests pin them: the
/// activations and row softmax went through [`Taylor7`] and the attention kernels through
/// [`Minimax5`] when their outputs were matched to llama.cpp (moving either site to the other
/// polynomial moves Gemma 3 270M logits or a Qwen2.5 greedy continuation past its bound).
pub(crate) trait ExpPolynomial {
    const LN2_HI: f32;
    const LN2_LO: f32;
    fn eval<S: Simd>(s: S, r: S::V) -> S::V;
}

/// Degree-7 Taylor polynomial of e^r in Horner form (truncation < 6e-9 relative); ln 2 cut to
/// 16 significant bits.
pub(crate) struct Taylor7;

impl ExpPolynomial for Taylor7 {
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    const LN2_LO: f32 = (std::f64::consts::LN_2 - f32::from_bits(0x3f31_7200) as f64) as f32;

    #[inline(always)]
    fn eval<S: Simd>(s: S, r: S::V) -> S::V {
        let mut p = s.splat(1.0 / 5040.0);
        for c in [
            1.0 / 720.0,
            1.0 / 120.0,
            1.0 / 24.0,
            1.0 / 6.0,
            0.5,
            1.0,
            1.0,
        ] {
            p = s.fma(p, r, s.splat(c));
        }
        p
    }
}

/// `1 + r + r^2 P(r)` with the degree-5 minimax `P` of the Cephes `expf`; ln 2 split at
/// 0.693359375 = 355/512.
pub(crate) struct Minimax5;

impl ExpPolynomial for Minimax5 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;

    #[inline(always)]
    fn eval<S: Simd>(s: S, r: S::V) -> S::V {
        const P: [f32; 6] = [
            1.987_569_1e-4,
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            1.666_666_5e-1,
            0.5,
        ];
        let mut p = s.splat(P[0]);
        for &c in &P[1..] {
            p = s.fma(p, r, s.splat(c));
        }
        s.fma(p, s.mul(r, r), s.add(r, s.splat(1.0)))
    }
}

/// e^x per lane: range reduction x = n ln2 + r, the polynomial `P` for e^r, and an
/// exponent-field 2^n. The one vector exp of the crate; `P` is the only thing that varies.
#[inline(always)]
pub(crate) fn exp_with<P: ExpPolynomial, S: Simd>(s: S, x: S::V) -> S::V {
    let xc = s.max(s.min(x, s.splat(EXP_MAX_X)), s.splat(EXP_MIN_X));
    let n = s.round(s.mul(xc, s.splat(LOG2_E)));
    let r = s.fma(n, s.splat(-P::LN2_HI), xc);
    let r = s.fma(n, s.splat(-P::LN2_LO), r);
    let y = s.mul(P::eval(s, r), s.pow2i(n));
    // exp(-inf) and other underflows are exactly 0 (masked softmax entries rely on it).
    s.select_lt(x, s.splat(EXP_MIN_X), s.zero(), y)
}

/// e^x for activations and row softmax ([`Taylor7`]).
#[inline(always)]
pub(crate) fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    exp_with::<Taylor7, S>(s, x)
}

/// 1 / (1 + e^-x).
#[inline(always)]
pub(crate) fn sigmoid<S: Simd>(s: S, x: S::V) -> S::V {
    let one = s.splat(1.0);
    s.div(one, s.add(one, exp(s, s.sub(s.zero(), x))))
}

/// Degree of the per-interval Taylor polynomials of `erf`.
const ERF_DEGREE: usize = 10;
/// |x| at and above which erf(x) = ±1 in f32 (erfc(4) = 1.5e-8).
const ERF_MAX: f32 = 4.0;

/// Taylor coefficients of erf around the centres of [0, 0.5), [0.5, 1), ... [3.5, 4):
/// `coef[d][i]` multiplies `(z - centre_i)^d`. Interval 0 approximates erf itself; the
/// others approximate erfc = 1 - erf, which is small there, so `1 - erfc` rounds once
/// instead of accumulating Horner rounding near 1.
struct ErfTables {
    coef: [[f32; 8]; ERF_DEGREE + 1],
}

fn erf_tables() -> &'static ErfTables {
    static TABLES: OnceLock<ErfTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let two_over_sqrt_pi = 2.0 / std::f64::consts::PI.sqrt();
        let mut coef = [[0f32; 8]; ERF_DEGREE + 1];
        for i in 0..8 {
            let c = 0.5 * i as f64 + 0.25;
            let erf_c = crate::ops::act::erf_f64(c);
            // d^n/dz^n erf(z) = 2/sqrt(pi) (-1)^(n-1) H_(n-1)(z) e^(-z^2), H = physicists'
            // Hermite polynomials: H_0 = 1, H_1 = 2z, H_(k+1) = 2z H_k - 2k H_(k-1).
            let gauss = two_over_sqrt_pi * (-c * c).exp();
            let (mut h_prev, mut h) = (0.0f64, 1.0f64);
            let mut factorial = 1.0f64;
            let sign = if i == 0 { 1.0 } else { -1.0 };
            coef[0][i] = if i == 0 { erf_c } else { 1.0 - erf_c } as f32;
            for n in 1..=ERF_DEGREE {
                factorial *= n as f64;
                let alternate = if n % 2 == 1 { 1.0 } else { -1.0 };
                let derivative = gauss * alternate * h;
                coef[n][i] = (sign * derivative / factorial) as f32;
                let k = (n - 1) as f64;
                let h_next = 2.0 * c * h - 2.0 * k * h_prev;
                h_prev = h;
                h = h_next;
            }
        }
        ErfTables { coef }
    })
}

/// Tables are built on first use; kernels fetch them once per call, outside their loops.
pub(crate) struct ErfCoefficients(&'static ErfTables);

pub(crate) fn erf_coefficients() -> ErfCoefficients {
    ErfCoefficients(erf_tables())
}

/// `(z, p)` with z = min(|x|, ERF_MAX) and p = erf(z) when z < 0.5, else erfc(z).
#[inline(always)]
fn erf_or_erfc<S: Simd>(s: S, t: &ErfCoefficients, x: S::V) -> (S::V, S::V) {
    let z = s.min(s.abs(x), s.splat(ERF_MAX));
    let idx = s.min(s.floor(s.mul(z, s.splat(2.0))), s.splat(7.0));
    let centre = s.fma(idx, s.splat(0.5), s.splat(0.25));
    let dz = s.sub(z, centre);
    let mut p = s.table8(&t.0.coef[ERF_DEGREE], idx);
    for d in (0..ERF_DEGREE).rev() {
        p = s.fma(p, dz, s.table8(&t.0.coef[d], idx));
    }
    (z, p)
}

/// erf(x) per lane, absolute error < 1e-7 (kernels use [`one_plus_erf`]; this form is what
/// the accuracy test checks the tables with).
#[cfg(test)]
#[inline(always)]
pub(crate) fn erf<S: Simd>(s: S, t: &ErfCoefficients, x: S::V) -> S::V {
    let (z, p) = erf_or_erfc(s, t, x);
    let one = s.splat(1.0);
    let magnitude = s.select_lt(z, s.splat(0.5), p, s.sub(one, p));
    s.copysign(magnitude, x)
}

/// 1 + erf(x) per lane. For x <= -0.5 this is erfc(|x|) straight from the table, so it keeps
/// its relative accuracy far into the negative tail, where `1 + erf(x)` would cancel (GELU's
/// small negative outputs depend on it).
#[inline(always)]
pub(crate) fn one_plus_erf<S: Simd>(s: S, t: &ErfCoefficients, x: S::V) -> S::V {
    let (z, p) = erf_or_erfc(s, t, x);
    let one = s.splat(1.0);
    let near_zero = s.add(one, s.copysign(p, x));
    let tail = s.select_lt(x, s.splat(0.0), p, s.sub(s.splat(2.0), p));
    s.select_lt(z, s.splat(0.5), near_zero, tail)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::cpu::simd::{Isa, dispatch};
    use crate::isa::test_levels;
    use crate::ops::act::erf_f64;

    fn apply<S: Simd>(s: S, which: u8, xs: &mut [f32]) {
        let t = erf_coefficients();
        for c in xs.chunks_mut(S::LANES) {
            let v = s.load_partial(c);
            let y = match which {
                0 => exp(s, v),
                2 => exp_with::<Minimax5, S>(s, v),
                _ => erf(s, &t, v),
            };
            s.store_partial(c, y);
        }
    }

    fn scalar(_which: u8, _xs: &mut [f32]) {
        panic!("no SIMD on this machine");
    }

    fn run(isa: Isa, which: u8, xs: &mut [f32]) {
        dispatch!(isa, apply, scalar, (which: u8, xs: &mut [f32]))
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect()
    }

    fn apply_one_plus_erf<S: Simd>(s: S, xs: &mut [f32]) {
        let t = erf_coefficients();
        for c in xs.chunks_mut(S::LANES) {
            let v = s.load_partial(c);
            s.store_partial(c, one_plus_erf(s, &t, v));
        }
    }

    fn run_one_plus_erf(isa: Isa, xs: &mut [f32]) {
        dispatch!(isa, apply_one_plus_erf, scalar_one_plus_erf, (xs: &mut [f32]))
    }

    fn scalar_one_plus_erf(_xs: &mut [f32]) {
        panic!("no SIMD on this machine");
    }

    #[test]
    fn one_plus_erf_keeps_relative_accuracy_in_the_negative_tail() {
        for path in test_levels(&[Isa::Avx2, Isa::Avx512], "vector math") {
            // Down to z = -4 (erfc 1.5e-8), where 1 + erf(z) in f32 would be all rounding.
            let xs = grid(-4.0, 4.0, 80_001);
            let mut ys = xs.clone();
            run_one_plus_erf(path, &mut ys);
            let worst = xs
                .iter()
                .zip(&ys)
                .map(|(&x, &y)| {
                    let exact = 1.0 + erf_f64(x as f64);
                    (y as f64 - exact).abs() / exact
                })
                .fold(0.0f64, f64::max);
            println!("{path:?}: worst relative error of 1 + erf on [-4, 4]: {worst:.2e}");
            assert!(worst < 5e-5, "{path:?}: {worst:e}");
        }
    }

    #[test]
    fn erf_abs_error_below_1e7_on_every_path() {
        for path in test_levels(&[Isa::Avx2, Isa::Avx512], "vector math") {
            let xs = grid(-6.0, 6.0, 200_001);
            let mut ys = xs.clone();
            run(path, 1, &mut ys);
            let worst = xs
                .iter()
                .zip(&ys)
                .map(|(&x, &y)| (y as f64 - erf_f64(x as f64)).abs())
                .fold(0.0, f64::max);
            println!("{path:?}: max |erf - erf_f64| = {worst:.3e}");
            assert!(worst < 1e-7, "{path:?}: {worst:e}");
        }
    }

    #[test]
    fn exp_rel_error_small_and_underflow_is_zero() {
        let paths = test_levels(&[Isa::Avx2, Isa::Avx512], "vector math");
        // 0: Taylor7 (`exp`), 2: Minimax5.
        for (path, which) in paths.iter().flat_map(|&p| [(p, 0u8), (p, 2u8)]) {
            let xs = grid(-87.0, 88.0, 100_003);
            let mut ys = xs.clone();
            run(path, which, &mut ys);
            let worst = xs
                .iter()
                .zip(&ys)
                .map(|(&x, &y)| {
                    let e = (x as f64).exp();
                    ((y as f64 - e) / e).abs()
                })
                .fold(0.0, f64::max);
            println!("{path:?}/{which}: max rel err exp = {worst:.3e}");
            assert!(worst < 2e-7, "{path:?}/{which}: {worst:e}");
            let mut special = [f32::NEG_INFINITY, -100.0, 0.0, 1.0];
            run(path, which, &mut special);
            assert_eq!(special[..3], [0.0, 0.0, 1.0]);
            assert!((special[3] - std::f32::consts::E).abs() < 1e-6);
        }
    }
}
