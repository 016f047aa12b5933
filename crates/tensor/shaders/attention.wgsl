// Fused attention (flash-style) with a position mask, GQA and an optional soft cap:
// out = softmax(scale * q.k (soft-capped, masked)) . v per (query, head), zeros when no key
// is visible. One workgroup per (query, head): each thread scores one key of a tile, the
// workgroup keeps a running max m and sum l (online softmax, the output rescaled when m grows)
// and each thread accumulates its own output dimensions. The n_q x n_kv scores never exist.
//
// K and V are bound as raw words so that one module reads f32 or f16 rows (K_F16 / V_F16).
// `mask_data` holds the mask inputs as i32 words: q_pos[n_q_total] at 0, then k_pos, q_group,
// k_group at the offsets in the params.

struct AttentionParams {
    n_q: u32,
    n_kv: u32,
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    q_offset: u32,
    out_offset: u32,
    q_base: u32,
    scale: f32,
    softcap: f32,
    causal: u32,
    window: i32,
    has_groups: u32,
    k_pos_at: u32,
    q_group_at: u32,
    k_group_at: u32,
}

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<u32>;
@group(0) @binding(2) var<storage, read> v: array<u32>;
@group(0) @binding(3) var<storage, read> mask_data: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<uniform> p: AttentionParams;

override K_F16: bool = false;
override V_F16: bool = false;

// Keys per tile = threads per workgroup.
const TILE: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_THREAD: u32 = MAX_HEAD_DIM / TILE;
// Finite stand-in for -inf: no real score is this small, and exp(LOWEST - m) is 0.
const LOWEST: f32 = -3.0e38;

var<workgroup> q_row: array<f32, MAX_HEAD_DIM>;
var<workgroup> red: array<f32, TILE>;
var<workgroup> weights: array<f32, TILE>;

// Elements e and e + 1 of a K or V buffer (e even when f16).
fn pair_of(buf_is_k: bool, e: u32) -> vec2<f32> {
    if buf_is_k {
        if K_F16 {
            return unpack2x16float(k[e >> 1u]);
        }
        return vec2<f32>(bitcast<f32>(k[e]), bitcast<f32>(k[e + 1u]));
    }
    if V_F16 {
        return unpack2x16float(v[e >> 1u]);
    }
    return vec2<f32>(bitcast<f32>(v[e]), bitcast<f32>(v[e + 1u]));
}

fn k_at(e: u32) -> f32 {
    if K_F16 {
        return unpack2x16float(k[e >> 1u])[e & 1u];
    }
    return bitcast<f32>(k[e]);
}

fn v_at(e: u32) -> f32 {
    if V_F16 {
        return unpack2x16float(v[e >> 1u])[e & 1u];
    }
    return bitcast<f32>(v[e]);
}

// Whether the query at position qp (group qg) sees key j. The host keeps positions within
// +-2^30, so qp - kp cannot overflow, and passes i32::MAX for "no window".
fn visible(qp: i32, qg: i32, j: u32) -> bool {
    let kp = mask_data[p.k_pos_at + j];
    let by_pos = (p.causal == 0u || kp <= qp) && qp - kp < p.window;
    let by_group = p.has_groups != 0u && qg != 0 && mask_data[p.k_group_at + j] == qg;
    return by_pos || by_group;
}

// Scaled, soft-capped score of key j against the query row in q_row (base: its first element).
fn score(base: u32) -> f32 {
    var dot = 0.0;
    if (p.head_dim & 1u) == 0u {
        for (var c = 0u; c < p.head_dim; c += 2u) {
            let kk = pair_of(true, base + c);
            dot += q_row[c] * kk.x + q_row[c + 1u] * kk.y;
        }
    } else {
        for (var c = 0u; c < p.head_dim; c++) {
            dot += q_row[c] * k_at(base + c);
        }
    }
    var s = dot * p.scale;
    if p.softcap != 0.0 {
        s = p.softcap * tanh_stable(s / p.softcap);
    }
    return s;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    // Every invocation of a workgroup takes the same branches below (they depend on the
    // workgroup id, the params or workgroupUniformLoad), so the barriers stay uniform.
    let item = flat_workgroup(wg, n_wg);
    if item >= p.n_q * p.n_head {
        return;
    }
    let qi = item / p.n_head;
    let h = item % p.n_head;
    let g = h / (p.n_head / p.n_kv_head);
    let d = p.head_dim;
    let q_start = p.q_offset + (qi * p.n_head + h) * d;
    for (var c = li; c < d; c += TILE) {
        q_row[c] = q[q_start + c];
    }
    let qp = mask_data[p.q_base + qi];
    var qg = 0;
    if p.has_groups != 0u {
        qg = mask_data[p.q_group_at + p.q_base + qi];
    }
    let kv_row = p.n_kv_head * d;

    var m = LOWEST;
    var l = 0.0;
    var acc: array<f32, DIMS_PER_THREAD>;
    for (var t0 = 0u; t0 < p.n_kv; t0 += TILE) {
        // Also orders the previous tile's reads of `weights` before this tile's writes.
        workgroupBarrier();
        let j = t0 + li;
        var s = LOWEST;
        if j < p.n_kv && visible(qp, qg, j) {
            s = score(j * kv_row + g * d);
        }
        red[li] = s;
        for (var stride = TILE / 2u; stride > 0u; stride /= 2u) {
            workgroupBarrier();
            if li < stride {
                red[li] = max(red[li], red[li + stride]);
            }
        }
        let tile_max = workgroupUniformLoad(&red[0]);
        if tile_max <= LOWEST {
            continue; // no key of this tile is visible
        }
        let m_new = max(m, tile_max);
        let alpha = exp(m - m_new);
        weights[li] = select(0.0, exp(s - m_new), s > LOWEST);
        workgroupBarrier();
        let n_keys = min(TILE, p.n_kv - t0);
        // Every thread sums the same weights in the same order, so l agrees everywhere.
        var tile_sum = 0.0;
        for (var c_i = 0u; c_i < DIMS_PER_THREAD; c_i++) {
            acc[c_i] *= alpha;
        }
        for (var jj = 0u; jj < n_keys; jj++) {
            let w = weights[jj];
            if w == 0.0 {
                continue;
            }
            tile_sum += w;
            let v_start = (t0 + jj) * kv_row + g * d;
            for (var c_i = 0u; c_i < DIMS_PER_THREAD; c_i++) {
                let c = li + c_i * TILE;
                if c < d {
                    acc[c_i] += w * v_at(v_start + c);
                }
            }
        }
        l = l * alpha + tile_sum;
        m = m_new;
    }
    let inv = select(0.0, 1.0 / l, l > 0.0);
    let o_start = p.out_offset + (qi * p.n_head + h) * d;
    for (var c_i = 0u; c_i < DIMS_PER_THREAD; c_i++) {
        let c = li + c_i * TILE;
        if c < d {
            out[o_start + c] = acc[c_i] * inv;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Many-query variant (prefill, encoders): one workgroup per (tile of QT queries, head). The
// tile's queries share every key and value row staged in workgroup memory, so a K/V row is
// read once per QT queries instead of once per query. Each query has LANES threads; lane i
// owns output dimensions i, i + LANES, ... and a partial dot product per key, summed in a
// fixed order so the lanes of a query agree on every score (and so on m and l).

const QT: u32 = 16u;
const LANES: u32 = 4u;
// Keys per tile: KT rows of MAX_HEAD_DIM f32 fill 8 KiB, staged first as K, then as V.
const KT: u32 = 8u;
const LANE_DIMS: u32 = MAX_HEAD_DIM / LANES;

var<workgroup> kv_tile: array<f32, KT * MAX_HEAD_DIM>;
var<workgroup> partial: array<f32, QT * KT * LANES>;

@compute @workgroup_size(64)
fn many_queries(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    // Branches around barriers depend only on the workgroup id and the params (uniform);
    // threads of a query past n_q keep taking part in the barriers and write nothing.
    let item = flat_workgroup(wg, n_wg);
    let q_tiles = (p.n_q + QT - 1u) / QT;
    if item >= q_tiles * p.n_head {
        return;
    }
    let h = item % p.n_head;
    let slot = li / LANES;
    let lane = li % LANES;
    let qi = (item / p.n_head) * QT + slot;
    let live = qi < p.n_q;
    let g = h / (p.n_head / p.n_kv_head);
    let d = p.head_dim;
    let kv_row = p.n_kv_head * d;

    var q_mine: array<f32, LANE_DIMS>;
    var acc: array<f32, LANE_DIMS>;
    var qp = 0;
    var qg = 0;
    if live {
        let q_start = p.q_offset + (qi * p.n_head + h) * d;
        for (var i = 0u; lane + LANES * i < d; i++) {
            q_mine[i] = q[q_start + lane + LANES * i];
        }
        qp = mask_data[p.q_base + qi];
        if p.has_groups != 0u {
            qg = mask_data[p.q_group_at + p.q_base + qi];
        }
    }

    var m = LOWEST;
    var l = 0.0;
    for (var t0 = 0u; t0 < p.n_kv; t0 += KT) {
        let n_keys = min(KT, p.n_kv - t0);
        // The previous tile's reads of its V rows end before this tile's K rows land.
        workgroupBarrier();
        for (var e = li; e < n_keys * d; e += 64u) {
            kv_tile[e] = k_at((t0 + e / d) * kv_row + g * d + e % d);
        }
        workgroupBarrier();
        for (var jj = 0u; jj < n_keys; jj++) {
            var dot = 0.0;
            for (var i = 0u; lane + LANES * i < d; i++) {
                dot += q_mine[i] * kv_tile[jj * d + lane + LANES * i];
            }
            partial[(slot * KT + jj) * LANES + lane] = dot;
        }
        workgroupBarrier();
        var s: array<f32, KT>;
        var tile_max = LOWEST;
        for (var jj = 0u; jj < n_keys; jj++) {
            var sc = LOWEST;
            if live && visible(qp, qg, t0 + jj) {
                let at = (slot * KT + jj) * LANES;
                var dot = partial[at];
                for (var r = 1u; r < LANES; r++) {
                    dot += partial[at + r];
                }
                sc = dot * p.scale;
                if p.softcap != 0.0 {
                    sc = p.softcap * tanh_stable(sc / p.softcap);
                }
            }
            s[jj] = sc;
            tile_max = max(tile_max, sc);
        }
        // Every K read happened before the barrier above: the tile now takes the V rows.
        for (var e = li; e < n_keys * d; e += 64u) {
            kv_tile[e] = v_at((t0 + e / d) * kv_row + g * d + e % d);
        }
        workgroupBarrier();
        if tile_max > LOWEST {
            let m_new = max(m, tile_max);
            let alpha = exp(m - m_new);
            for (var i = 0u; lane + LANES * i < d; i++) {
                acc[i] *= alpha;
            }
            var tile_sum = 0.0;
            for (var jj = 0u; jj < n_keys; jj++) {
                if s[jj] <= LOWEST {
                    continue;
                }
                let w = exp(s[jj] - m_new);
                tile_sum += w;
                for (var i = 0u; lane + LANES * i < d; i++) {
                    acc[i] += w * kv_tile[jj * d + lane + LANES * i];
                }
            }
            l = l * alpha + tile_sum;
            m = m_new;
        }
    }
    if live {
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let o_start = p.out_offset + (qi * p.n_head + h) * d;
        for (var i = 0u; lane + LANES * i < d; i++) {
            out[o_start + lane + LANES * i] = acc[i] * inv;
        }
    }
}
