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

// Index of this invocation's element (at or past p.len for the idle tail).
fn element(wg: vec3<u32>, n_wg: vec3<u32>, li: u32) -> u32 {
    return flat_workgroup(wg, n_wg) * WORKGROUP + li;
}

// The activations themselves are in the prelude (common.wgsl), shared with the matmul
// epilogue.

@compute @workgroup_size(256)
fn gelu_tanh(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = act_gelu_tanh(x[p.in_offset + i]);
}

@compute @workgroup_size(256)
fn gelu_erf(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = act_gelu_erf(x[p.in_offset + i]);
}

@compute @workgroup_size(256)
fn gelu_quick(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = act_gelu_quick(x[p.in_offset + i]);
}

@compute @workgroup_size(256)
fn silu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = element(wg, n_wg, li);
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = act_silu(x[p.in_offset + i]);
}
