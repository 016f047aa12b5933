// Prelude shared by every kernel: prepended to each op-family file before compilation.
//
// Conventions: bindings are inputs first, then the output, then the uniform params; every
// params struct is mirrored by a #[repr(C)] struct in crates/tensor/src/gpu/kernels/.

// Dispatches larger than 65535 workgroups per dimension are laid out as a 2-D grid; this is
// the flat index of the current workgroup in that grid.
fn flat_workgroup(wg: vec3<u32>, n_wg: vec3<u32>) -> u32 {
    return wg.y * n_wg.x + wg.x;
}

// Half-precision value `half` (0 = low 16 bits, 1 = high) of a packed word, as f32.
fn f16_in_word(word: u32, half: u32) -> f32 {
    return unpack2x16float(word >> (16u * half)).x;
}

// Four signed bytes of a little-endian word, lowest byte first.
fn i8x4_to_f32(word: u32) -> vec4<f32> {
    let w = bitcast<i32>(word);
    return vec4<f32>(vec4<i32>((w << 24u) >> 24u, (w << 16u) >> 24u, (w << 8u) >> 24u, w >> 24u));
}

// Four bytes of a little-endian word, lowest byte first, as unsigned values.
fn u8x4_to_f32(word: u32) -> vec4<f32> {
    return vec4<f32>(f32(word & 0xffu), f32((word >> 8u) & 0xffu), f32((word >> 16u) & 0xffu), f32(word >> 24u));
}

// tanh that cannot overflow: exp only sees non-positive arguments.
fn tanh_stable(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    let t = (1.0 - e) / (1.0 + e);
    return select(t, -t, x < 0.0);
}

// Complementary error function for z >= 0, fractional error below 1.2e-7 (Chebyshev fit of
// erfc(z) * exp(z^2), as in Numerical Recipes' erfcc).
fn erfc_nonneg(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806
        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    return t * exp(-z * z + poly);
}

// erfc over all reals.
fn erfc_any(x: f32) -> f32 {
    let r = erfc_nonneg(abs(x));
    return select(r, 2.0 - r, x < 0.0);
}

// Activations (the unary kernels and the matmul epilogue), codes as `ACT_*` below.
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
fn act_gelu_tanh(v: f32) -> f32 {
    return 0.5 * v * (1.0 + tanh_stable(SQRT_2_OVER_PI * v * (1.0 + 0.044715 * v * v)));
}

// Exact GELU: x Phi(x) = 0.5 x erfc(-x / sqrt(2)). erfc keeps precision for negative x,
// where 1 + erf(x / sqrt(2)) would cancel.
fn act_gelu_erf(v: f32) -> f32 {
    return 0.5 * v * erfc_any(-v * FRAC_1_SQRT_2);
}

// Quick GELU: x sigmoid(1.702 x).
fn act_gelu_quick(v: f32) -> f32 {
    return v / (1.0 + exp(-1.702 * v));
}

// SiLU: x sigmoid(x).
fn act_silu(v: f32) -> f32 {
    return v / (1.0 + exp(-v));
}

const ACT_NONE: u32 = 0u;
const ACT_GELU_TANH: u32 = 1u;
const ACT_GELU_ERF: u32 = 2u;
const ACT_GELU_QUICK: u32 = 3u;
const ACT_SILU: u32 = 4u;

fn activate(code: u32, v: f32) -> f32 {
    switch code {
        case ACT_GELU_TANH: { return act_gelu_tanh(v); }
        case ACT_GELU_ERF: { return act_gelu_erf(v); }
        case ACT_GELU_QUICK: { return act_gelu_quick(v); }
        case ACT_SILU: { return act_silu(v); }
        default: { return v; }
    }
}

// The f16 bits nearest to the f32 with bits `x` (ties to even; overflow to inf; NaN stays a
// quiet NaN keeping the top payload bits), exactly as `half::f16::from_f32`. Done on the bits
// because pack2x16float's rounding is implementation-defined and f32 subnormals may be
// flushed by float arithmetic.
fn f32_bits_to_f16(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let exp = (x >> 23u) & 0xffu;
    let man = x & 0x7fffffu;
    if exp == 0xffu {
        return sign | 0x7c00u | select(0u, 0x200u, man != 0u) | (man >> 13u);
    }
    let e = i32(exp) - 112; // rebias: f16 exponent field for a normal result
    if e >= 31 {
        return sign | 0x7c00u;
    }
    var kept: u32;
    var dropped: u32;
    var shift: u32;
    if e <= 0 {
        // Subnormal result: the implicit bit joins the mantissa, shifted further right.
        shift = u32(14 - e);
        if shift > 24u {
            return sign;
        }
        let full = man | 0x800000u;
        kept = full >> shift;
        dropped = full & ((1u << shift) - 1u);
    } else {
        shift = 13u;
        kept = (u32(e) << 10u) | (man >> 13u);
        dropped = man & 0x1fffu;
    }
    let halfway = 1u << (shift - 1u);
    // A carry out of the mantissa correctly bumps the exponent (up to inf).
    let up = dropped > halfway || (dropped == halfway && (kept & 1u) == 1u);
    return sign | (kept + select(0u, 1u, up));
}
