// Matrix product with the weight in its stored format:
//   out[i, out_col + j] = sum_k x[i, k] * w[j, k]
// for one chunk of weight rows j < m and one chunk of x rows i < n. The weight binding is raw
// words; each format is decoded here, four values at a time, in blocks of 32 along k.
// Each invocation computes one weight row against ROWS x rows, so a decoded weight value is
// used ROWS times.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    w_offset: u32,   // bytes from the binding start to weight row 0
    x_offset: u32,   // elements
    out_offset: u32, // elements
    out_stride: u32,
    out_col: u32,
}

// Weight format, fixed per pipeline (ggml type ids).
const F32: u32 = 0u;
const F16: u32 = 1u;
const Q4_0: u32 = 2u;
const Q8_0: u32 = 8u;
override W_TYPE: u32 = 0u;

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: MatmulParams;

const WORKGROUP: u32 = 64u;
const ROWS: u32 = 4u;
const BLOCK: u32 = 32u;

// The 32-bit little-endian word starting at any byte of the weight binding.
fn word_at_byte(byte: u32) -> u32 {
    let i = byte / 4u;
    let shift = (byte % 4u) * 8u;
    if shift == 0u {
        return w[i];
    }
    return (w[i] >> shift) | (w[i + 1u] << (32u - shift));
}

// The f16 at an even byte offset.
fn f16_at_byte(byte: u32) -> f32 {
    return f16_in_word(w[byte / 4u], (byte / 2u) % 2u);
}

// Bytes per block of 32 for the quantized formats: an f16 scale then the quants.
fn block_bytes() -> u32 {
    if W_TYPE == Q8_0 {
        return 34u;
    }
    return 18u;
}

// Byte offset of block b of weight row j (quantized formats).
fn block_start(j: u32, b: u32) -> u32 {
    return p.w_offset + (j * (p.k / BLOCK) + b) * block_bytes();
}

// Scale of block b of row j (1 for the float formats).
fn block_scale(j: u32, b: u32) -> f32 {
    if W_TYPE == F32 || W_TYPE == F16 {
        return 1.0;
    }
    return f16_at_byte(block_start(j, b));
}

// Weight value at element e (float formats), counted from the binding start of row 0.
fn float_at(e: u32) -> f32 {
    if W_TYPE == F16 {
        return f16_in_word(w[e / 2u], e % 2u);
    }
    return bitcast<f32>(w[e]);
}

// Elements 4q .. 4q+3 of block b of row j, before the block scale.
fn weight4(j: u32, b: u32, q: u32) -> vec4<f32> {
    if W_TYPE == Q8_0 {
        return i8x4_to_f32(word_at_byte(block_start(j, b) + 2u + 4u * q));
    }
    if W_TYPE == Q4_0 {
        // Quant byte t holds element t (low nibble) and element t + 16 (high nibble).
        let bytes = word_at_byte(block_start(j, b) + 2u + 4u * (q % 4u));
        let nibbles = (bytes >> (4u * (q / 4u))) & 0x0f0f0f0fu;
        return u8x4_to_f32(nibbles) - vec4<f32>(8.0);
    }
    var e = j * p.k + b * BLOCK + 4u * q;
    if W_TYPE == F16 {
        e += p.w_offset / 2u;
    } else {
        e += p.w_offset / 4u;
    }
    return vec4<f32>(float_at(e), float_at(e + 1u), float_at(e + 2u), float_at(e + 3u));
}

fn x4(at: u32) -> vec4<f32> {
    return vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let t = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    let row_groups = (p.n + ROWS - 1u) / ROWS;
    if t >= p.m * row_groups {
        return;
    }
    // Neighbouring invocations take neighbouring weight rows and share the x rows.
    let j = t % p.m;
    let i0 = (t / p.m) * ROWS;
    // Rows past the end are computed on a clamped row and never stored.
    let x0 = p.x_offset + min(i0, p.n - 1u) * p.k;
    let x1 = p.x_offset + min(i0 + 1u, p.n - 1u) * p.k;
    let x2 = p.x_offset + min(i0 + 2u, p.n - 1u) * p.k;
    let x3 = p.x_offset + min(i0 + 3u, p.n - 1u) * p.k;

    var acc = vec4<f32>(0.0);
    let blocks = p.k / BLOCK;
    for (var b = 0u; b < blocks; b++) {
        var part = vec4<f32>(0.0);
        for (var q = 0u; q < BLOCK / 4u; q++) {
            let wv = weight4(j, b, q);
            let kk = b * BLOCK + 4u * q;
            part += vec4<f32>(dot(wv, x4(x0 + kk)), dot(wv, x4(x1 + kk)), dot(wv, x4(x2 + kk)), dot(wv, x4(x3 + kk)));
        }
        acc += part * block_scale(j, b);
    }
    // Float formats allow any k: finish the last partial block one element at a time.
    if W_TYPE == F32 || W_TYPE == F16 {
        var row0 = j * p.k;
        if W_TYPE == F16 {
            row0 += p.w_offset / 2u;
        } else {
            row0 += p.w_offset / 4u;
        }
        for (var kk = blocks * BLOCK; kk < p.k; kk++) {
            let wv = float_at(row0 + kk);
            acc += wv * vec4<f32>(x[x0 + kk], x[x1 + kk], x[x2 + kk], x[x3 + kk]);
        }
    }

    let out0 = p.out_offset + i0 * p.out_stride + p.out_col + j;
    out[out0] = acc.x;
    if i0 + 1u < p.n {
        out[out0 + p.out_stride] = acc.y;
    }
    if i0 + 2u < p.n {
        out[out0 + 2u * p.out_stride] = acc.z;
    }
    if i0 + 3u < p.n {
        out[out0 + 3u * p.out_stride] = acc.w;
    }
}
