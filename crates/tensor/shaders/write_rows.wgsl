// Writes f32 rows into an f16 tensor in place, rounding each value to the nearest f16 (ties
// to even) from its bits, as half::f16::from_f32 does. One thread per destination word; a
// word half outside the written range keeps its old value, so rows may start mid-word.

struct WriteRowsParams {
    // Destination words touched by this chunk.
    words: u32,
    // f16 element (from the destination binding start) where the chunk's first row begins.
    first: u32,
    // Elements written.
    len: u32,
    // First source element (from the source binding start).
    src_offset: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> p: WriteRowsParams;

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
            halves[h] = f32_bits_to_f16(src[p.src_offset + e - p.first]);
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
