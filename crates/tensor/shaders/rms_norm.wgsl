// RMS norm per row: out = x / sqrt(mean(x^2) + eps), times the weight row when given.
// One workgroup per row; its threads stride over the columns and reduce in shared memory.

struct RmsNormParams {
    rows: u32,
    cols: u32,
    x_offset: u32,
    out_offset: u32,
    eps: f32,
    has_weight: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: RmsNormParams;

const WORKGROUP: u32 = 64u;
var<workgroup> partial: array<f32, WORKGROUP>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // Every invocation of a workgroup takes the same branch, so the barriers below stay uniform.
    let row = flat_workgroup(wg, n_wg);
    if row >= p.rows {
        return;
    }
    let base = p.x_offset + row * p.cols;
    var sum = 0.0;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        let v = x[base + c];
        sum += v * v;
    }
    partial[li] = sum;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if li < stride {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(partial[0] / f32(p.cols) + p.eps);
    let out_base = p.out_offset + row * p.cols;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        var v = x[base + c] * inv;
        if p.has_weight != 0u {
            v *= weight[c];
        }
        out[out_base + c] = v;
    }
}
