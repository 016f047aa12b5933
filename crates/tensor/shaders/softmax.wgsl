// Softmax per row of (x * scale + mask). Mask values at or below -1e30 (incl. -inf) exclude
// their column; a row whose columns are all excluded becomes zeros instead of NaN.
// One workgroup per row: max, then sum of exponentials, then normalised output.

struct SoftmaxParams {
    rows: u32,
    cols: u32,
    x_offset: u32,
    out_offset: u32,
    scale: f32,
    has_mask: u32,
    mask_rows: u32,
    row_base: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: SoftmaxParams;

const WORKGROUP: u32 = 64u;
const MASKED: f32 = -1e30;
// Finite stand-in for -inf: no valid logit is this small, and exp(MASKED - max) is 0.
const LOWEST: f32 = -3.0e38;
var<workgroup> partial: array<f32, WORKGROUP>;

// Logit of column c, or LOWEST when the mask excludes it.
fn logit(row: u32, c: u32) -> f32 {
    var v = x[p.x_offset + row * p.cols + c] * p.scale;
    if p.has_mask != 0u {
        let m = mask[((p.row_base + row) % p.mask_rows) * p.cols + c];
        if m <= MASKED {
            return LOWEST;
        }
        v += m;
    }
    return v;
}

fn reduce_max(li: u32) -> f32 {
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if li < stride {
            partial[li] = max(partial[li], partial[li + stride]);
        }
        workgroupBarrier();
    }
    return partial[0];
}

fn reduce_sum(li: u32) -> f32 {
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if li < stride {
            partial[li] += partial[li + stride];
        }
        workgroupBarrier();
    }
    return partial[0];
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // The whole workgroup takes the same branch, so the barriers stay uniform.
    let row = flat_workgroup(wg, n_wg);
    if row >= p.rows {
        return;
    }
    var m = LOWEST;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        m = max(m, logit(row, c));
    }
    partial[li] = m;
    let row_max = reduce_max(li);
    workgroupBarrier();

    var sum = 0.0;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        let v = logit(row, c);
        if v > LOWEST {
            sum += exp(v - row_max);
        }
    }
    partial[li] = sum;
    let total = reduce_sum(li);

    let inv = select(0.0, 1.0 / total, total > 0.0);
    let out_base = p.out_offset + row * p.cols;
    for (var c = li; c < p.cols; c += WORKGROUP) {
        let v = logit(row, c);
        out[out_base + c] = select(0.0, exp(v - row_max) * inv, v > LOWEST);
    }
}
