// SwiGLU: out[i] = silu(gate[i]) * up[i].

struct GluParams {
    len: u32,
    gate_offset: u32,
    up_offset: u32,
    out_offset: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<f32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: GluParams;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    let g = gate[p.gate_offset + i];
    out[p.out_offset + i] = g / (1.0 + exp(-g)) * up[p.up_offset + i];
}
