// GEGLU exactly as ggml's CPU backend: out[i] = table[f16 bits of gate[i]] * up[i], where the
// table holds GELU of every f16 value rounded to f16; 0 for gate <= -10, gate * up for
// gate >= 10. The gate is read as bits so the f16 rounding sees exactly the stored f32.

struct GluParams {
    len: u32,
    gate_offset: u32,
    up_offset: u32,
    out_offset: u32,
}

@group(0) @binding(0) var<storage, read> gate: array<u32>;
@group(0) @binding(1) var<storage, read> up: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: GluParams;

const WORKGROUP: u32 = 256u;
const SATURATION: f32 = 10.0;

@compute @workgroup_size(256)
fn geglu_table(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = flat_workgroup(wg, n_wg) * WORKGROUP + li;
    if i >= p.len {
        return;
    }
    let bits = gate[p.gate_offset + i];
    let g = bitcast<f32>(bits);
    let u = up[p.up_offset + i];
    var y: f32;
    if g <= -SATURATION {
        y = 0.0;
    } else if g >= SATURATION {
        y = g * u;
    } else {
        y = table[f32_bits_to_f16(bits)] * u;
    }
    out[p.out_offset + i] = y;
}
