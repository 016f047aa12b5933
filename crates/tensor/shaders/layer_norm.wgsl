// Layer norm per row: out = (x - mean) / sqrt(var + eps) * weight + bias (weight and bias
// optional). One workgroup per row: the mean, then the variance around it (two passes, as the
// reference), then the output.

struct LayerNormParams {
    rows: u32,
    cols: u32,
    x_offset: u32,
    out_offset: u32,
    eps: f32,
    has_weight: u32,
    has_bias: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: LayerNormParams;

const WORKGROUP: u32 = 64u;
var<workgroup> partial: array<f32, WORKGROUP>;

fn reduce_sum(li: u32, v: f32) -> f32 {
    workgroupBarrier();
    partial[li] = v;
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        workgroupBarrier();
        if li < stride {
            partial[li] += partial[li + stride];
        }
    }
    return workgroupUniformLoad(&partial[0]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // The whole workgroup takes the same branch, so the barriers stay uniform.
    let row = flat_workgroup(wg, n_wg);
    if row >= p.rows {
        return;
    }
    let base = p.x_offset + row * p.cols;
    var sum = 0.0;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        sum += x[base + c];
    }
    let mean = reduce_sum(li, sum) / f32(p.cols);
    var sq = 0.0;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        let dv = x[base + c] - mean;
        sq += dv * dv;
    }
    let inv = 1.0 / sqrt(reduce_sum(li, sq) / f32(p.cols) + p.eps);
    let out_base = p.out_offset + row * p.cols;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        var v = (x[base + c] - mean) * inv;
        if p.has_weight != 0u {
            v *= weight[c];
        }
        if p.has_bias != 0u {
            v += bias[c];
        }
        out[out_base + c] = v;
    }
}
