// Element-wise binary ops with row broadcast: out[i] = a[i] op b[i % b_len].
// A same-shape operand uses b_len = len; a broadcast row uses b_len = its length.

struct BinaryParams {
    len: u32,
    b_len: u32,
    a_offset: u32,
    b_offset: u32,
    out_offset: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: BinaryParams;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = a[p.a_offset + i] + b[p.b_offset + i % p.b_len];
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
       @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    out[p.out_offset + i] = a[p.a_offset + i] * b[p.b_offset + i % p.b_len];
}
