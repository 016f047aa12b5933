// Matrix product with the weight in its stored GGUF format:
//   out[i, out_col + j] = sum_k x[i, k] * w[j, k]
// for one chunk of weight rows j < m and one chunk of x rows i < n. The weight binding is raw
// words; every format is decoded here, straight from its blocks, so quantized weights never
// exist as floats in GPU memory.
//
// Every format is walked in groups of 32 elements along k (a legacy block, or one eighth of a
// 256-element super-block), each group in two halves of 16 that share a scale and a min:
//   w = s * q - m
// where q is a small integer decoded four at a time (`group_quad`) and (s, m) come from the
// block's scale fields (`group_scale`). The scales multiply the partial dot products, not each
// element. Float formats use s = 1, m = 0 and q = the value itself.
//
// Epilogue (fixed per pipeline): EPILOGUE_BIAS adds bias[column] and EPILOGUE_ACT applies an
// activation (prelude `ACT_*` codes) to each result before it is stored, so a linear layer with
// bias and activation is one dispatch.
//
// Two entry points: `main` gives each invocation one weight row against ROWS x rows (a decoded
// weight value is reused ROWS times: batches); `matvec` gives a few invocations one weight row
// and ROWS x rows, splits k over them and sums in workgroup memory (a handful of x rows:
// decoding one token).

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
const Q4_1: u32 = 3u;
const Q5_0: u32 = 6u;
const Q5_1: u32 = 7u;
const Q8_0: u32 = 8u;
const Q2_K: u32 = 10u;
const Q3_K: u32 = 11u;
const Q4_K: u32 = 12u;
const Q5_K: u32 = 13u;
const Q6_K: u32 = 14u;
const IQ4_NL: u32 = 20u;
const IQ4_XS: u32 = 23u;
const BF16: u32 = 30u;
override W_TYPE: u32 = 0u;
// x rows an invocation (or matvec workgroup) multiplies: ROWS, or 1 to skip the clamped
// duplicates when there is a single x row.
override X_ROWS: u32 = 4u;

override EPILOGUE_BIAS: bool = false;
override EPILOGUE_ACT: u32 = 0u;

@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// One value per output column (all m of them, not just this chunk's); a stand-in without bias.
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: MatmulParams;

const WORKGROUP: u32 = 64u;
const ROWS: u32 = 4u;
const GROUP: u32 = 32u;

// The non-linear levels of IQ4_NL and IQ4_XS.
const KVALUES_IQ4NL = array<f32, 16>(-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0,
    1.0, 13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);

// ---------------------------------------------------------------------------------------------
// Reading the weight binding at byte offsets (blocks are not 4-byte aligned).

// The 32-bit little-endian word starting at any byte of the weight binding.
fn word_at_byte(byte: u32) -> u32 {
    let i = byte / 4u;
    let shift = (byte % 4u) * 8u;
    if shift == 0u {
        return w[i];
    }
    return (w[i] >> shift) | (w[i + 1u] << (32u - shift));
}

fn byte_at(byte: u32) -> u32 {
    return (w[byte / 4u] >> (8u * (byte % 4u))) & 0xffu;
}

// The f16 at an even byte offset.
fn f16_at_byte(byte: u32) -> f32 {
    return f16_in_word(w[byte / 4u], (byte / 2u) % 2u);
}

// ---------------------------------------------------------------------------------------------
// Format geometry (folded to constants once W_TYPE is fixed).

fn is_float() -> bool {
    return W_TYPE == F32 || W_TYPE == F16 || W_TYPE == BF16;
}

// Formats whose elements are s * q - m with a non-zero m.
fn has_min() -> bool {
    return W_TYPE == Q4_1 || W_TYPE == Q5_1 || W_TYPE == Q2_K || W_TYPE == Q4_K || W_TYPE == Q5_K;
}

fn block_elems() -> u32 {
    switch W_TYPE {
        case 10u, 11u, 12u, 13u, 14u, 23u: {
            return 256u;
        }
        default: {
            return 32u;
        }
    }
}

fn block_bytes() -> u32 {
    switch W_TYPE {
        case 2u, 20u: { return 18u; }
        case 3u: { return 20u; }
        case 6u: { return 22u; }
        case 7u: { return 24u; }
        case 8u: { return 34u; }
        case 10u: { return 84u; }
        case 11u: { return 110u; }
        case 12u: { return 144u; }
        case 13u: { return 176u; }
        case 14u: { return 210u; }
        case 23u: { return 136u; }
        default: { return 4u; }
    }
}

// Byte offset of the block holding group g of weight row j (quantized formats).
fn block_start(j: u32, g: u32) -> u32 {
    let per_block = block_elems() / GROUP;
    return p.w_offset + (j * (p.k / block_elems()) + g / per_block) * block_bytes();
}

// ---------------------------------------------------------------------------------------------
// Float formats: any k.

// Byte offset of element e of weight row j.
fn float_byte(j: u32, e: u32) -> u32 {
    if W_TYPE == F32 {
        return p.w_offset + (j * p.k + e) * 4u;
    }
    return p.w_offset + (j * p.k + e) * 2u;
}

// The two 16-bit floats of a word (low half first).
fn halves(word: u32) -> vec2<f32> {
    if W_TYPE == BF16 {
        return vec2<f32>(bitcast<f32>(word << 16u), bitcast<f32>(word & 0xffff0000u));
    }
    return unpack2x16float(word);
}

fn float_at(j: u32, e: u32) -> f32 {
    let byte = float_byte(j, e);
    if W_TYPE == F32 {
        return bitcast<f32>(w[byte / 4u]);
    }
    return halves(w[byte / 4u] >> (8u * (byte % 4u))).x;
}

// Elements e .. e+3 of weight row j.
fn float_quad(j: u32, e: u32) -> vec4<f32> {
    let byte = float_byte(j, e);
    if W_TYPE == F32 {
        let i = byte / 4u;
        return bitcast<vec4<f32>>(vec4<u32>(w[i], w[i + 1u], w[i + 2u], w[i + 3u]));
    }
    return vec4<f32>(halves(word_at_byte(byte)), halves(word_at_byte(byte + 4u)));
}

// ---------------------------------------------------------------------------------------------
// Quantized formats. `bs` is the block's byte offset, `sub` the group inside the block (0 for
// the 32-element formats, 0..8 for super-blocks), `qd` the quad inside the group (0..8), `h`
// the half of the group (0..2).

// Nibbles 4qd .. 4qd+3 of 32 elements stored as 16 bytes in Q4_0 order: byte t holds element t
// (low nibble) and element t + 16 (high nibble). One nibble per byte lane.
fn q4_nibbles(qs: u32, qd: u32) -> u32 {
    return (word_at_byte(qs + 4u * (qd % 4u)) >> (4u * (qd / 4u))) & 0x0f0f0f0fu;
}

// Bit 4 of elements 4qd .. 4qd+3 of a Q5 block (bit e of the 32-bit qh), one per byte lane.
fn q5_high(qh: u32, qd: u32) -> u32 {
    let h = (qh >> (4u * qd)) & 0xfu;
    return ((h & 1u) | ((h & 2u) << 7u) | ((h & 4u) << 14u) | ((h & 8u) << 21u)) << 4u;
}

fn iq4_levels(nibbles: u32) -> vec4<f32> {
    return vec4<f32>(KVALUES_IQ4NL[nibbles & 0xfu], KVALUES_IQ4NL[(nibbles >> 8u) & 0xfu],
        KVALUES_IQ4NL[(nibbles >> 16u) & 0xfu], KVALUES_IQ4NL[nibbles >> 24u]);
}

// Q4_K / Q5_K: 6-bit scale and min of sub-block `sub` from the 12 packed bytes at `at`.
fn scale_min_k4(at: u32, sub: u32) -> vec2<f32> {
    if sub < 4u {
        return vec2<f32>(f32(byte_at(at + sub) & 63u), f32(byte_at(at + sub + 4u) & 63u));
    }
    let packed = byte_at(at + sub + 4u);
    let sc = (packed & 0xfu) | ((byte_at(at + sub - 4u) >> 6u) << 4u);
    let mn = (packed >> 4u) | ((byte_at(at + sub) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// (s, m) of half h of group `sub` of the block at bs.
fn quant_scale(bs: u32, sub: u32, h: u32) -> vec2<f32> {
    switch W_TYPE {
        case 3u, 7u: {
            return vec2<f32>(f16_at_byte(bs), -f16_at_byte(bs + 2u));
        }
        case 10u: {
            // 16 scale bytes, one per 16 elements: low nibble scale, high nibble min.
            let sc = byte_at(bs + 2u * sub + h);
            return vec2<f32>(f16_at_byte(bs + 80u) * f32(sc & 0xfu), f16_at_byte(bs + 82u) * f32(sc >> 4u));
        }
        case 11u: {
            // 16 signed 6-bit scales: low nibbles in bytes 0..8, top bits in bytes 8..12.
            let i = 2u * sub + h;
            let lo = (byte_at(bs + 96u + i % 8u) >> (4u * (i / 8u))) & 0xfu;
            let hi = (byte_at(bs + 104u + i % 4u) >> (2u * (i / 4u))) & 3u;
            return vec2<f32>(f16_at_byte(bs + 108u) * f32(i32(lo | (hi << 4u)) - 32), 0.0);
        }
        case 12u, 13u: {
            let sm = scale_min_k4(bs + 4u, sub);
            return vec2<f32>(f16_at_byte(bs), f16_at_byte(bs + 2u)) * sm;
        }
        case 14u: {
            // Signed 8-bit scales; group `sub` is part sub % 4 of half sub / 4.
            let sc = bitcast<i32>(byte_at(bs + 192u + 8u * (sub / 4u) + 2u * (sub % 4u) + h) << 24u) >> 24u;
            return vec2<f32>(f16_at_byte(bs + 208u) * f32(sc), 0.0);
        }
        case 23u: {
            let lo = (byte_at(bs + 4u + sub / 2u) >> (4u * (sub % 2u))) & 0xfu;
            let hi = (byte_at(bs + 2u + sub / 4u) >> (2u * (sub % 4u))) & 3u;
            return vec2<f32>(f16_at_byte(bs) * f32(i32(lo | (hi << 4u)) - 32), 0.0);
        }
        default: {
            return vec2<f32>(f16_at_byte(bs), 0.0);
        }
    }
}

// The integer levels q of elements 4qd .. 4qd+3 of group `sub` of the block at bs.
fn quant_quad(bs: u32, sub: u32, qd: u32) -> vec4<f32> {
    switch W_TYPE {
        case 2u: {
            return u8x4_to_f32(q4_nibbles(bs + 2u, qd)) - vec4<f32>(8.0);
        }
        case 3u: {
            return u8x4_to_f32(q4_nibbles(bs + 4u, qd));
        }
        case 6u: {
            let q = q4_nibbles(bs + 6u, qd) | q5_high(word_at_byte(bs + 2u), qd);
            return u8x4_to_f32(q) - vec4<f32>(16.0);
        }
        case 7u: {
            return u8x4_to_f32(q4_nibbles(bs + 8u, qd) | q5_high(word_at_byte(bs + 4u), qd));
        }
        case 8u: {
            return i8x4_to_f32(word_at_byte(bs + 2u + 4u * qd));
        }
        case 10u: {
            // Each 32 bytes of qs hold four groups, two bits each.
            let q = word_at_byte(bs + 16u + 32u * (sub / 4u) + 4u * qd) >> (2u * (sub % 4u));
            return u8x4_to_f32(q & 0x03030303u);
        }
        case 11u: {
            // Two low bits as Q2_K; bit `sub` of the hmask byte set means no -4 offset.
            let lo = (word_at_byte(bs + 32u + 32u * (sub / 4u) + 4u * qd) >> (2u * (sub % 4u))) & 0x03030303u;
            let hi = (word_at_byte(bs + 4u * qd) >> sub) & 0x01010101u;
            return u8x4_to_f32(lo | (hi << 2u)) - vec4<f32>(4.0);
        }
        case 12u: {
            let q = word_at_byte(bs + 16u + 32u * (sub / 2u) + 4u * qd) >> (4u * (sub % 2u));
            return u8x4_to_f32(q & 0x0f0f0f0fu);
        }
        case 13u: {
            let lo = (word_at_byte(bs + 48u + 32u * (sub / 2u) + 4u * qd) >> (4u * (sub % 2u))) & 0x0f0f0f0fu;
            let hi = (word_at_byte(bs + 16u + 4u * qd) >> sub) & 0x01010101u;
            return u8x4_to_f32(lo | (hi << 4u));
        }
        case 14u: {
            // Half sub / 4 owns 64 ql bytes and 32 qh bytes; part sub % 4 picks the ql nibble
            // (and which 32 bytes) and the qh bit pair.
            let part = sub % 4u;
            let lo = (word_at_byte(bs + 64u * (sub / 4u) + 32u * (part % 2u) + 4u * qd) >> (4u * (part / 2u))) & 0x0f0f0f0fu;
            let hi = (word_at_byte(bs + 128u + 32u * (sub / 4u) + 4u * qd) >> (2u * part)) & 0x03030303u;
            return u8x4_to_f32(lo | (hi << 4u)) - vec4<f32>(32.0);
        }
        case 20u: {
            return iq4_levels(q4_nibbles(bs + 2u, qd));
        }
        case 23u: {
            return iq4_levels(q4_nibbles(bs + 8u + 16u * sub, qd));
        }
        default: {
            return vec4<f32>(0.0);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Both entry points go through these two.

// (s, m) of half h of group g of weight row j: its elements are s * q - m.
fn group_scale(j: u32, g: u32, h: u32) -> vec2<f32> {
    if is_float() {
        return vec2<f32>(1.0, 0.0);
    }
    return quant_scale(block_start(j, g), g % (block_elems() / GROUP), h);
}

// q of elements 4qd .. 4qd+3 of group g of weight row j.
fn group_quad(j: u32, g: u32, qd: u32) -> vec4<f32> {
    if is_float() {
        return float_quad(j, g * GROUP + 4u * qd);
    }
    return quant_quad(block_start(j, g), g % (block_elems() / GROUP), qd);
}

fn x4(at: u32) -> vec4<f32> {
    return vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
}

// Start of x row i0 + r, clamped to the last row: rows past the end are computed and dropped.
fn x_row(i0: u32, r: u32) -> u32 {
    return p.x_offset + min(i0 + r, p.n - 1u) * p.k;
}

// sum over half h of group g of weight row j, against the ROWS x rows starting at xs.
fn half_group(j: u32, g: u32, h: u32, xs: vec4<u32>) -> vec4<f32> {
    let sm = group_scale(j, g, h);
    var dq = vec4<f32>(0.0);
    var sx = vec4<f32>(0.0);
    for (var t = 0u; t < 4u; t++) {
        let qd = 4u * h + t;
        let wv = group_quad(j, g, qd);
        let kk = g * GROUP + 4u * qd;
        let a0 = x4(xs.x + kk);
        let one = vec4<f32>(1.0);
        if X_ROWS == 1u {
            dq.x += dot(wv, a0);
            if has_min() {
                sx.x += dot(a0, one);
            }
            continue;
        }
        let a1 = x4(xs.y + kk);
        let a2 = x4(xs.z + kk);
        let a3 = x4(xs.w + kk);
        dq += vec4<f32>(dot(wv, a0), dot(wv, a1), dot(wv, a2), dot(wv, a3));
        if has_min() {
            sx += vec4<f32>(dot(a0, one), dot(a1, one), dot(a2, one), dot(a3, one));
        }
    }
    return sm.x * dq - sm.y * sx;
}

// The one element e of weight row j against the x rows (float formats' tails).
fn single(j: u32, e: u32, xs: vec4<u32>) -> vec4<f32> {
    return float_at(j, e) * vec4<f32>(x[xs.x + e], x[xs.y + e], x[xs.z + e], x[xs.w + e]);
}

// The epilogue of output column `col`.
fn finish(col: u32, v: f32) -> f32 {
    var r = v;
    if EPILOGUE_BIAS {
        r += bias[col];
    }
    return activate(EPILOGUE_ACT, r);
}

fn store(j: u32, i0: u32, acc: vec4<f32>) {
    let col = p.out_col + j;
    let out0 = p.out_offset + i0 * p.out_stride + col;
    out[out0] = finish(col, acc.x);
    if i0 + 1u < p.n {
        out[out0 + p.out_stride] = finish(col, acc.y);
    }
    if i0 + 2u < p.n {
        out[out0 + 2u * p.out_stride] = finish(col, acc.z);
    }
    if i0 + 3u < p.n {
        out[out0 + 3u * p.out_stride] = finish(col, acc.w);
    }
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
    let xs = vec4<u32>(x_row(i0, 0u), x_row(i0, 1u), x_row(i0, 2u), x_row(i0, 3u));

    var acc = vec4<f32>(0.0);
    let groups = p.k / GROUP;
    for (var g = 0u; g < groups; g++) {
        acc += half_group(j, g, 0u, xs) + half_group(j, g, 1u, xs);
    }
    // Only float formats allow a k that is not a whole number of groups.
    for (var e = groups * GROUP; e < p.k; e++) {
        acc += single(j, e, xs);
    }
    store(j, i0, acc);
}

// matvec: MV_LANES invocations share one weight row, so a workgroup covers 64 / MV_LANES rows
// and ends with one barrier (a tree reduction needs log2(lanes) barriers, and on CPU
// implementations each one switches every invocation of the workgroup). Set by the host.
override MV_LANES: u32 = 8u;

var<workgroup> partial: array<vec4<f32>, WORKGROUP>;

@compute @workgroup_size(64)
fn matvec(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let flat = flat_workgroup(wg, n_wg);
    let mv_rows = WORKGROUP / MV_LANES;
    let row_blocks = (p.m + mv_rows - 1u) / mv_rows;
    // Whole workgroups past the end leave together, before the barrier.
    if flat >= row_blocks * ((p.n + ROWS - 1u) / ROWS) {
        return;
    }
    let lane = li % MV_LANES;
    let row = (flat % row_blocks) * mv_rows + li / MV_LANES;
    // Rows past m are computed on a clamped row (to reach the barrier) and never stored.
    let j = min(row, p.m - 1u);
    let i0 = (flat / row_blocks) * ROWS;
    let xs = vec4<u32>(x_row(i0, 0u), x_row(i0, 1u), x_row(i0, 2u), x_row(i0, 3u));

    // Lanes stride over the half groups of the row, then over the float tail.
    var acc = vec4<f32>(0.0);
    let halves_n = p.k / (GROUP / 2u);
    for (var u = lane; u < halves_n; u += MV_LANES) {
        acc += half_group(j, u / 2u, u % 2u, xs);
    }
    for (var e = halves_n * (GROUP / 2u) + lane; e < p.k; e += MV_LANES) {
        acc += single(j, e, xs);
    }

    partial[li] = acc;
    workgroupBarrier();
    if lane == 0u && row < p.m {
        var sum = vec4<f32>(0.0);
        for (var l = 0u; l < MV_LANES; l++) {
            sum += partial[li + l];
        }
        store(j, i0, sum);
    }
}
