// Writes f32 rows into an f16 tensor in place, rounding each value to the nearest f16 (ties
// to even) from its bits, as half::f16::from_f32 does. One thread per destination word; a
// word half outside the written range keeps its old value, so rows may start mid-word.
//
// With ROPE set, each source row is a token's [n_heads, head_dim] keys and is rotated on the
// way (rope fused into the K-cache write): pair `pair` of a head turns by the (cos, sin) at
// table[table_offset + token * n_pairs + pair], with the pairings and the arithmetic of
// rope.wgsl (ROPE 1: adjacent pairs as rope_normal, 2: halves as rope_neox).

struct WriteRowsParams {
    // Destination words touched by this chunk.
    words: u32,
    // f16 element (from the destination binding start) where the chunk's first row begins.
    first: u32,
    // Elements written.
    len: u32,
    // First source element (from the source binding start).
    src_offset: u32,
    // Rope only.
    n_heads: u32,
    head_dim: u32,
    n_pairs: u32,
    table_offset: u32,
}

override ROPE: u32 = 0u;

@group(0) @binding(0) var<storage, read> src: array<u32>;
// (cos, sin) per token and pair; a stand-in without ROPE.
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<uniform> p: WriteRowsParams;

// Bits of the f32 value written at element i of the chunk (counted from its first source
// element, which starts a token).
fn value_bits(i: u32) -> u32 {
    if ROPE == 0u {
        return src[p.src_offset + i];
    }
    let d = i % p.head_dim;
    if d >= 2u * p.n_pairs {
        return src[p.src_offset + i];
    }
    let head_start = p.src_offset + i - d;
    let token = i / (p.head_dim * p.n_heads);
    var pair: u32;
    var first: u32;
    var second: u32;
    if ROPE == 2u {
        pair = d % p.n_pairs;
        first = pair;
        second = pair + p.n_pairs;
    } else {
        pair = d / 2u;
        first = 2u * pair;
        second = first + 1u;
    }
    let cs = table[p.table_offset + token * p.n_pairs + pair];
    let a = bitcast<f32>(src[head_start + first]);
    let b = bitcast<f32>(src[head_start + second]);
    return bitcast<u32>(select(a * cs.y + b * cs.x, a * cs.x - b * cs.y, d == first));
}

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn write_rows_f16(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let t = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if t >= p.words {
        return;
    }
    let word = p.first / 2u + t;
    var halves = vec2<u32>(0u, 0u);
    var keep_old = false;
    for (var h = 0u; h < 2u; h++) {
        let e = 2u * word + h;
        if e >= p.first && e < p.first + p.len {
            halves[h] = f32_bits_to_f16(value_bits(e - p.first));
        } else {
            keep_old = true;
        }
    }
    if keep_old {
        let old = dst[word];
        let e = 2u * word;
        if e < p.first || e >= p.first + p.len {
            halves.x = old & 0xffffu;
        }
        if e + 1u < p.first || e + 1u >= p.first + p.len {
            halves.y = old >> 16u;
        }
    }
    dst[word] = halves.x | (halves.y << 16u);
}
