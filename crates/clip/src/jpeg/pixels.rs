//! stb_image's integer IDCT, "fancy" chroma upsampling and fixed-point YCbCr->RGB, reproduced so
//! our decoded pixels equal llama.cpp's byte for byte.

/// stb's 12-bit fixed point: truncation toward zero after adding 0.5 (so negatives round up).
fn fixed12(x: f32) -> i32 {
    (f64::from(x * 4096.0) + 0.5) as i32
}

struct Consts {
    c0: i32,
    c1: i32,
    c2: i32,
    c3: i32,
    c4: i32,
    c5: i32,
    c6: i32,
    c7: i32,
    c8: i32,
    c9: i32,
    c10: i32,
    c11: i32,
}

fn consts() -> Consts {
    Consts {
        c0: fixed12(0.541_196_1),
        c1: fixed12(-1.847_759_1),
        c2: fixed12(0.765_366_85),
        c3: fixed12(1.175_875_6),
        c4: fixed12(0.298_631_34),
        c5: fixed12(2.053_12),
        c6: fixed12(3.072_711),
        c7: fixed12(1.501_321_1),
        c8: fixed12(-0.899_976_2),
        c9: fixed12(-2.562_915_4),
        c10: fixed12(-1.961_570_6),
        c11: fixed12(-0.390_180_64),
    }
}

/// One 1-D pass over eight samples; returns the even part (x0..x3) and odd part (t0..t3).
fn pass(k: &Consts, s: [i32; 8]) -> ([i32; 4], [i32; 4]) {
    let p1 = (s[2] + s[6]) * k.c0;
    let t2 = p1 + s[6] * k.c1;
    let t3 = p1 + s[2] * k.c2;
    let t0 = (s[0] + s[4]) << 12;
    let t1 = (s[0] - s[4]) << 12;
    let even = [t0 + t3, t1 + t2, t1 - t2, t0 - t3];
    let (t0, t1, t2, t3) = (s[7], s[5], s[3], s[1]);
    let p3 = t0 + t2;
    let p4 = t1 + t3;
    let p1 = t0 + t3;
    let p2 = t1 + t2;
    let p5 = (p3 + p4) * k.c3;
    let p1 = p5 + p1 * k.c8;
    let p2 = p5 + p2 * k.c9;
    let p3 = p3 * k.c10;
    let p4 = p4 * k.c11;
    let odd = [
        t0 * k.c4 + p1 + p3,
        t1 * k.c5 + p2 + p4,
        t2 * k.c6 + p2 + p3,
        t3 * k.c7 + p1 + p4,
    ];
    (even, odd)
}

/// Outputs of a pass in natural order, given even `x` and odd `t`, with `bias` added and `shift` applied.
fn outputs(x: [i32; 4], t: [i32; 4], bias: i32, shift: u32) -> [i32; 8] {
    let x = x.map(|v| v.wrapping_add(bias));
    [
        (x[0] + t[3]) >> shift,
        (x[1] + t[2]) >> shift,
        (x[2] + t[1]) >> shift,
        (x[3] + t[0]) >> shift,
        (x[3] - t[0]) >> shift,
        (x[2] - t[1]) >> shift,
        (x[1] - t[2]) >> shift,
        (x[0] - t[3]) >> shift,
    ]
}

/// Inverse DCT of dequantized coefficients (natural order) into 8x8 level-shifted pixels.
pub fn idct_block(coeffs: &[i16; 64], out: &mut [u8; 64]) {
    let k = consts();
    let mut mid = [0i32; 64];
    for col in 0..8 {
        let s = std::array::from_fn(|r| i32::from(coeffs[r * 8 + col]));
        let (x, t) = pass(&k, s);
        // The SSE2 path saturates the column results to 16 bits; mirror it.
        for (r, v) in outputs(x, t, 512, 10).into_iter().enumerate() {
            mid[r * 8 + col] = v.clamp(-32768, 32767);
        }
    }
    for row in 0..8 {
        let s = std::array::from_fn(|c| mid[row * 8 + c]);
        let (x, t) = pass(&k, s);
        for (c, v) in outputs(x, t, 65536 + (128 << 17), 17)
            .into_iter()
            .enumerate()
        {
            out[row * 8 + c] = v.clamp(0, 255) as u8;
        }
    }
}

/// Doubles a chroma row both ways: `near` is the closest source row, `far` the next one away.
pub fn upsample_hv2(near: &[u8], far: &[u8], out: &mut [u8]) {
    let w = near.len();
    let col = |i: usize| 3 * i32::from(near[i]) + i32::from(far[i]);
    if w == 1 {
        let v = ((col(0) + 2) >> 2) as u8;
        out[0] = v;
        out[1] = v;
        return;
    }
    let mut t1 = col(0);
    out[0] = ((t1 * 4 + 8) >> 4) as u8;
    for i in 1..w {
        let t0 = t1;
        t1 = col(i);
        out[i * 2 - 1] = ((3 * t0 + t1 + 8) >> 4) as u8;
        out[i * 2] = ((3 * t1 + t0 + 8) >> 4) as u8;
    }
    out[w * 2 - 1] = ((t1 * 4 + 8) >> 4) as u8;
}

/// Doubles a chroma row horizontally only (4:2:2), including stb's lopsided last pair.
pub fn upsample_h2(input: &[u8], out: &mut [u8]) {
    let w = input.len();
    let v = |i: usize| i32::from(input[i]);
    if w == 1 {
        out[0] = input[0];
        out[1] = input[0];
        return;
    }
    out[0] = input[0];
    out[1] = ((v(0) * 3 + v(1) + 2) >> 2) as u8;
    for i in 1..w - 1 {
        let n = 3 * v(i) + 2;
        out[i * 2] = ((n + v(i - 1)) >> 2) as u8;
        out[i * 2 + 1] = ((n + v(i + 1)) >> 2) as u8;
    }
    out[(w - 1) * 2] = ((v(w - 2) * 3 + v(w - 1) + 2) >> 2) as u8;
    out[(w - 1) * 2 + 1] = input[w - 1];
}

/// Vertical-only doubling (4:4:0).
pub fn upsample_v2(near: &[u8], far: &[u8], out: &mut [u8]) {
    for ((o, &n), &f) in out.iter_mut().zip(near).zip(far) {
        *o = ((3 * i32::from(n) + i32::from(f) + 2) >> 2) as u8;
    }
}

fn fixed20(x: f32) -> i32 {
    ((f64::from(x * 4096.0) + 0.5) as i32) << 8
}

/// stb's fixed-point JFIF conversion of one pixel.
pub fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let y_fixed = (i32::from(y) << 20) + (1 << 19);
    let cr = i32::from(cr) - 128;
    let cb = i32::from(cb) - 128;
    let r = y_fixed + cr * fixed20(1.402);
    let g = y_fixed + cr * -fixed20(0.714_14) + ((cb * -fixed20(0.344_14)) & !0xffff);
    let b = y_fixed + cb * fixed20(1.772);
    [r, g, b].map(|v| (v >> 20).clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_constants_match_stb() {
        let k = consts();
        let got = [
            k.c0, k.c1, k.c2, k.c3, k.c4, k.c5, k.c6, k.c7, k.c8, k.c9, k.c10, k.c11,
        ];
        // Negative constants truncate toward zero after +0.5, as C's (int) cast does.
        assert_eq!(
            got,
            [
                2217, -7567, 3135, 4816, 1223, 8410, 12586, 6149, -3685, -10497, -8034, -1597
            ]
        );
        assert_eq!(fixed20(1.402), 5743 << 8);
    }

    #[test]
    fn dc_only_block_is_flat() {
        let mut coeffs = [0i16; 64];
        coeffs[0] = 80; // DC of 80 -> +10 over the 128 level shift
        let mut out = [0u8; 64];
        idct_block(&coeffs, &mut out);
        assert!(out.iter().all(|&v| v == 138), "{out:?}");
    }

    #[test]
    fn upsamplers_keep_flat_rows_flat_and_blend_edges() {
        let mut out = [0u8; 8];
        upsample_hv2(&[100; 4], &[100; 4], &mut out);
        assert_eq!(out, [100; 8]);
        upsample_hv2(&[0, 160], &[0, 160], &mut out[..4]);
        assert_eq!(&out[..4], &[0, 40, 120, 160]);
        // stb weights the last pair toward the second-to-last sample; kept for exactness.
        upsample_h2(&[0, 160], &mut out[..4]);
        assert_eq!(&out[..4], &[0, 40, 40, 160]);
    }

    #[test]
    fn grey_and_primaries_convert_like_jfif() {
        assert_eq!(ycbcr_to_rgb(128, 128, 128), [128, 128, 128]);
        assert_eq!(ycbcr_to_rgb(76, 85, 255), [254, 0, 0]);
    }
}
