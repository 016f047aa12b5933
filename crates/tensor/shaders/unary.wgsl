// Element-wise activations: out[i] = f(x[i]).

struct UnaryParams {
    len: u32,
    in_offset: u32,
    out_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: UnaryParams;

const WORKGROUP: u32 = 256u;
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;
const FRAC_1_SQRT_2: f32 = 0.7071067811865476;

// Index of this invocation's element (at or past p.len for the idle tail).
fn element(wg: vec3<u32>, n_wg: vec3<u32>, li: u32) -> u32 {
    return flat_workgroup(wg, n_wg) * WORKGROUP + li;
}

// GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
@compute @workgroup_size(256)
fn gelu_tanh(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    let v = x[p.in_offset + i];
    out[p.out_offset + i] = 0.5 * v * (1.0 + tanh_stable(SQRT_2_OVER_PI * v * (1.0 + 0.044715 * v * v)));
}

// Exact GELU: x Phi(x) = 0.5 x erfc(-x / sqrt(2)). erfc keeps precision for negative x,
// where 1 + erf(x / sqrt(2)) would cancel.
@compute @workgroup_size(256)
fn gelu_erf(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    let v = x[p.in_offset + i];
    out[p.out_offset + i] = 0.5 * v * erfc_any(-v * FRAC_1_SQRT_2);
}

// Quick GELU: x sigmoid(1.702 x).
@compute @workgroup_size(256)
fn gelu_quick(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    let v = x[p.in_offset + i];
    out[p.out_offset + i] = v / (1.0 + exp(-1.702 * v));
}

// SiLU: x sigmoid(x).
@compute @workgroup_size(256)
fn silu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    let v = x[p.in_offset + i];
    out[p.out_offset + i] = v / (1.0 + exp(-v));
}
