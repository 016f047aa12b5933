// Rotary position embedding over x = [tokens, heads, head_dim]. The first 2 * n_pairs
// dimensions of each head are rotated in pairs, the rest copied. Pair i of token t turns by the
// angle whose (cos, sin) the host put at table[t * n_pairs + i] (attention factor applied);
// the host also decides which angle each pair gets, so every ggml mode maps onto two layouts:
//   rope_normal: pairs (2i, 2i + 1)        (ggml mode 0)
//   rope_neox:   pairs (i, i + n_pairs)    (ggml modes 2, 8, 40; mode 24 with n_pairs = head_dim/2)

struct RopeParams {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    n_pairs: u32,
    x_offset: u32,
    out_offset: u32,
    table_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> table: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: RopeParams;

const WORKGROUP: u32 = 256u;

// One output element: `neox` picks the pairing.
fn rotate(i: u32, neox: bool) {
    let d = i % p.head_dim;
    let head_start = i - d;
    let token = i / (p.head_dim * p.n_heads);
    let src = p.x_offset + head_start;
    if d >= 2u * p.n_pairs {
        out[p.out_offset + i] = x[src + d];
        return;
    }
    var pair: u32;
    var first: u32;   // index of the pair's first element within the head
    var second: u32;
    if neox {
        pair = d % p.n_pairs;
        first = pair;
        second = pair + p.n_pairs;
    } else {
        pair = d / 2u;
        first = 2u * pair;
        second = first + 1u;
    }
    let cs = table[p.table_offset + token * p.n_pairs + pair];
    let a = x[src + first];
    let b = x[src + second];
    // (a, b) -> (a cos - b sin, a sin + b cos)
    out[p.out_offset + i] = select(a * cs.y + b * cs.x, a * cs.x - b * cs.y, d == first);
}

@compute @workgroup_size(256)
fn rope_normal(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.n_tokens * p.n_heads * p.head_dim {
        return;
    }
    rotate(i, false);
}

@compute @workgroup_size(256)
fn rope_neox(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.n_tokens * p.n_heads * p.head_dim {
        return;
    }
    rotate(i, true);
}
