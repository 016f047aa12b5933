// Element-wise ops with one scalar parameter: out[i] = f(x[i], p.value).

struct PointwiseParams {
    len: u32,
    in_offset: u32,
    out_offset: u32,
    value: f32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: PointwiseParams;

const WORKGROUP: u32 = 256u;

// x * value.
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = x[p.in_offset + i] * p.value;
}

// Soft cap: value * tanh(x / value).
@compute @workgroup_size(256)
fn softcap(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = p.value * tanh_stable(x[p.in_offset + i] / p.value);
}

// The f16 value nearest x (ties to even), as f32: what an f16 kernel's input goes through in
// ggml (bit-exact with half::f16::from_f32; value unused).
@compute @workgroup_size(256)
fn round_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    let h = f32_bits_to_f16(bitcast<u32>(x[p.in_offset + i]));
    out[p.out_offset + i] = unpack2x16float(h).x;
}
