//! Activations: SiLU, GELU (tanh approximation, exact erf, quick), and the gated forms
//! SwiGLU / GeGLU (`act(gate) * up`).
//!
//! GELU tanh form (ggml `gelu`): `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
//! GELU erf form (ggml `gelu_erf`): `0.5 x (1 + erf(x / sqrt(2)))`.
//! Quick GELU (ggml `gelu_quick`): `x * sigmoid(1.702 x)`.

use crate::{Result, Tensor, TensorError, cpu};

/// sqrt(2/pi), the tanh-GELU input scale.
pub const GELU_SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh-GELU.
pub const GELU_COEF_A: f32 = 0.044_715;
/// The sigmoid scale of quick GELU.
pub const GELU_QUICK_COEF: f32 = 1.702;

/// erf in f64 to ~1e-15: `2/sqrt(pi) e^(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))`.
/// Every term is positive (no cancellation); beyond |x| = 6, erf is ±1 to f64 precision.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let z = x.abs();
    if z >= 6.0 {
        return 1f64.copysign(x);
    }
    let (mut term, mut sum) = (z, z);
    let mut n = 0.0;
    // Terms peak near n = z^2 and then fall geometrically; 200 is far past 1e-17 for z < 6.
    for _ in 0..200 {
        term *= 2.0 * z * z / (2.0 * n + 3.0);
        sum += term;
        n += 1.0;
        if term < sum * 1e-17 {
            break;
        }
    }
    (2.0 / std::f64::consts::PI.sqrt() * (-z * z).exp() * sum).copysign(x)
}

/// The scalar definitions every backend is tested against (f64 inside, one rounding out).
pub mod reference {
    use super::*;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    pub fn silu_one(x: f32) -> f32 {
        let x = x as f64;
        (x * sigmoid(x)) as f32
    }
    pub fn gelu_tanh_one(x: f32) -> f32 {
        let x = x as f64;
        let u = GELU_SQRT_2_OVER_PI as f64 * (x + GELU_COEF_A as f64 * x * x * x);
        (0.5 * x * (1.0 + u.tanh())) as f32
    }
    pub fn gelu_erf_one(x: f32) -> f32 {
        let x = x as f64;
        (0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2))) as f32
    }
    pub fn gelu_quick_one(x: f32) -> f32 {
        let x = x as f64;
        (x * sigmoid(GELU_QUICK_COEF as f64 * x)) as f32
    }

    pub fn silu(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = silu_one(*v));
    }
    pub fn gelu_tanh(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_tanh_one(*v));
    }
    pub fn gelu_erf(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_erf_one(*v));
    }
    pub fn gelu_quick(x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_quick_one(*v));
    }
    /// `out = silu(gate) * up`.
    pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = (silu_one(g) as f64 * u as f64) as f32;
        }
    }
    /// `out = gelu_tanh(gate) * up`.
    pub fn geglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = (gelu_tanh_one(g) as f64 * u as f64) as f32;
        }
    }
}

/// Which activation a Tensor-level op applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
    GeluErf,
    GeluQuick,
}

/// `act(x)` elementwise, any shape and float dtype; f32 result.
pub fn activation(x: &Tensor, act: Activation) -> Result<Tensor> {
    let mut data = x.to_f32_vec()?;
    match act {
        Activation::Silu => cpu::silu(&mut data),
        Activation::GeluTanh => cpu::gelu_tanh(&mut data),
        Activation::GeluErf => cpu::gelu_erf(&mut data),
        Activation::GeluQuick => cpu::gelu_quick(&mut data),
    }
    Tensor::from_f32(x.shape(), &data)
}

pub fn silu(x: &Tensor) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::silu(x));
    activation(x, Activation::Silu)
}
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::gelu_tanh(x));
    activation(x, Activation::GeluTanh)
}
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::gelu_erf(x));
    activation(x, Activation::GeluErf)
}
pub fn gelu_quick(x: &Tensor) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::gelu_quick(x));
    activation(x, Activation::GeluQuick)
}

fn gated(op: &'static str, gate: &Tensor, up: &Tensor) -> Result<(Vec<f32>, Vec<f32>)> {
    if gate.shape() != up.shape() {
        return Err(TensorError::ShapeMismatch {
            op,
            detail: format!("gate {:?} vs up {:?}", gate.shape(), up.shape()),
        });
    }
    Ok((gate.to_f32_vec()?, up.to_f32_vec()?))
}

/// `silu(gate) * up` (same shapes).
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (g, u) = gated("swiglu", gate, up)?;
    let mut out = vec![0f32; g.len()];
    cpu::swiglu(&g, &u, &mut out);
    Tensor::from_f32(gate.shape(), &out)
}

/// `gelu_tanh(gate) * up` (same shapes).
pub fn geglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    let (g, u) = gated("geglu", gate, up)?;
    let mut out = vec![0f32; g.len()];
    cpu::geglu(&g, &u, &mut out);
    Tensor::from_f32(gate.shape(), &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_f64_known_values() {
        // Values from tables of erf (Abramowitz & Stegun, table 7.1) to 10+ digits.
        let known = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_8),
            (1.0, 0.842_700_792_9),
            (2.0, 0.995_322_265_0),
            (3.0, 0.999_977_909_5),
        ];
        for (x, e) in known {
            assert!((erf_f64(x) - e).abs() < 1e-9, "erf({x}) = {}", erf_f64(x));
            assert!((erf_f64(-x) + e).abs() < 1e-9);
        }
        assert_eq!(erf_f64(7.0), 1.0);
    }

    #[test]
    fn references_at_known_points() {
        assert_eq!(reference::silu_one(0.0), 0.0);
        assert!((reference::silu_one(1.0) - 0.731_058_6).abs() < 1e-6);
        assert!((reference::gelu_erf_one(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((reference::gelu_tanh_one(1.0) - 0.841_192).abs() < 1e-5);
        assert!((reference::gelu_quick_one(1.0) - 0.845_796_5).abs() < 1e-5);
    }

    #[test]
    fn tensor_ops_shape_checks() {
        let a = Tensor::from_f32(&[2, 2], &[1.0, -1.0, 0.5, 2.0]).unwrap();
        let b = Tensor::from_f32(&[4], &[1.0; 4]).unwrap();
        assert!(swiglu(&a, &b).is_err());
        let y = swiglu(&a, &a).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        let s = silu(&a).unwrap().to_f32_vec().unwrap();
        assert!((s[0] - 0.731_058_6).abs() < 1e-6);
    }
}
