// Image and token-grid resampling and layout: im2col (the gather half of a convolution; the other half
// is a matmul), the average pool of a token grid and its bilinear align-corners resize. One
// thread per output value; the sums run in the same order as the CPU twins in
// crates/tensor/src/cpu/{conv,grid}.rs.
//
// im2col: src is an image [c, h, w]; dst rows [oh * ow, c * kh * kw], zeros where the kernel
// reaches into the padding. pool_avg / unfold / resize_bilinear: src is a grid [h * w, c] of
// rows. transpose: src is [h, w].

struct GridParams {
    total: u32,
    c: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kh: u32,
    kw: u32,
    stride_y: u32,
    stride_x: u32,
    pad_y: u32,
    pad_x: u32,
    dil_y: u32,
    dil_x: u32,
    // unfold's block side (pool_avg's block is kh x kw).
    k: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> p: GridParams;

fn output_index(wg: vec3<u32>, n_wg: vec3<u32>, li: u32) -> u32 {
    return flat_workgroup(wg, n_wg) * 64u + li;
}

@compute @workgroup_size(64)
fn im2col(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = output_index(wg, n_wg, li);
    if i >= p.total {
        return;
    }
    let row_len = p.c * p.kh * p.kw;
    let at = i / row_len;
    let r = i % row_len;
    let ci = r / (p.kh * p.kw);
    let ky = (r / p.kw) % p.kh;
    let kx = r % p.kw;
    let iy = i32((at / p.ow) * p.stride_y + ky * p.dil_y) - i32(p.pad_y);
    let ix = i32((at % p.ow) * p.stride_x + kx * p.dil_x) - i32(p.pad_x);
    var v = 0.0;
    if iy >= 0 && iy < i32(p.h) && ix >= 0 && ix < i32(p.w) {
        v = src[(ci * p.h + u32(iy)) * p.w + u32(ix)];
    }
    dst[i] = v;
}

@compute @workgroup_size(64)
fn pool_avg(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let i = output_index(wg, n_wg, li);
    if i >= p.total {
        return;
    }
    let cell = i / p.c;
    let ch = i % p.c;
    let y0 = (cell / p.ow) * p.kh;
    let x0 = (cell % p.ow) * p.kw;
    var acc = 0.0;
    for (var y = y0; y < y0 + p.kh; y++) {
        for (var x = x0; x < x0 + p.kw; x++) {
            acc += src[(y * p.w + x) * p.c + ch];
        }
    }
    dst[i] = acc / f32(p.kh * p.kw);
}

// dst [w, h] = src [h, w] transposed (h rows of w values).
@compute @workgroup_size(64)
fn transpose(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = output_index(wg, n_wg, li);
    if i >= p.total {
        return;
    }
    let col = i / p.h;
    let row = i % p.h;
    dst[i] = src[row * p.w + col];
}

// Each k x k block of the grid as one row ordered [channel, ky, kx] (cpu::grid::unfold).
@compute @workgroup_size(64)
fn unfold(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = output_index(wg, n_wg, li);
    if i >= p.total {
        return;
    }
    let kk = p.k * p.k;
    let wide = p.c * kk;
    let block = i / wide;
    let r = i % wide;
    let ch = r / kk;
    let ky = (r / p.k) % p.k;
    let kx = r % p.k;
    let y = (block / p.ow) * p.k + ky;
    let x = (block % p.ow) * p.k + kx;
    dst[i] = src[(y * p.w + x) * p.c + ch];
}

// Source cells and weight along one axis (cpu::grid::align_corners_taps).
fn taps(i: u32, n_out: u32, n_in: u32) -> vec3<f32> {
    var scale = f32(n_out) / f32(n_in);
    if n_out > 1u && n_in > 1u {
        scale = f32(n_out - 1u) / f32(n_in - 1u);
    }
    let s = f32(i) / scale;
    let f = floor(s);
    let lo = min(u32(max(f, 0.0)), n_in - 1u);
    let hi = min(lo + 1u, n_in - 1u);
    return vec3<f32>(f32(lo), f32(hi), clamp(s - f, 0.0, 1.0));
}

@compute @workgroup_size(64)
fn resize_bilinear(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) n_wg: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let i = output_index(wg, n_wg, li);
    if i >= p.total {
        return;
    }
    let cell = i / p.c;
    let ch = i % p.c;
    let ty = taps(cell / p.ow, p.oh, p.h);
    let tx = taps(cell % p.ow, p.ow, p.w);
    let y0 = u32(ty.x);
    let y1 = u32(ty.y);
    let x0 = u32(tx.x);
    let x1 = u32(tx.y);
    let dy = ty.z;
    let dx = tx.z;
    let a = src[(y0 * p.w + x0) * p.c + ch];
    let b = src[(y0 * p.w + x1) * p.c + ch];
    let c = src[(y1 * p.w + x0) * p.c + ch];
    let e = src[(y1 * p.w + x1) * p.c + ch];
    dst[i] = a * (1.0 - dx) * (1.0 - dy) + b * dx * (1.0 - dy) + c * (1.0 - dx) * dy + e * dx * dy;
}
