//! Test-only reference: element `i` of one block, computed on its own from byte offsets
//! (no block structs, no loops over the block), with ggml's f32 operation order. The fast
//! block code must agree with it bit for bit.

use half::f16;

use super::iq_tables::{IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID};
use crate::DType;

const KV_IQ4: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];
const KV_FP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

fn h(b: &[u8], off: usize) -> f32 {
    f16::from_le_bytes([b[off], b[off + 1]]).to_f32()
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Nibble of a 32-element Q4_0-ordered byte array at `qs`: low nibbles first, then high.
fn nibble32(b: &[u8], qs: usize, i: usize) -> u8 {
    let byte = b[qs + i % 16];
    if i < 16 { byte & 15 } else { byte >> 4 }
}

/// ±1 for element `j` of an IQ2/IQ3 sign pattern given by 7 stored bits (the eighth makes
/// the number of minus signs even).
fn pattern_sign(bits7: u32, j: usize) -> f32 {
    let bit = if j < 7 {
        (bits7 >> j) & 1
    } else {
        bits7.count_ones() & 1
    };
    if bit == 1 { -1.0 } else { 1.0 }
}

fn byte_of(entry: u64, j: usize) -> u8 {
    (entry >> (8 * j)) as u8
}

/// The 6-bit scale and min of K-quant sub-block `s` from the 12 bytes at `off`.
fn k4_scale_min(b: &[u8], off: usize, s: usize) -> (f32, f32) {
    let q = &b[off..off + 12];
    let (sc, m) = if s < 4 {
        (q[s] & 63, q[s + 4] & 63)
    } else {
        (
            (q[s + 4] & 15) | ((q[s - 4] >> 6) << 4),
            (q[s + 4] >> 4) | ((q[s] >> 6) << 4),
        )
    };
    (f32::from(sc), f32::from(m))
}

/// Element `i` of the block `b` of type `dtype`, or `None` for plain (non-block) types.
pub fn element(dtype: DType, b: &[u8], i: usize) -> Option<f32> {
    let v = match dtype {
        DType::Q4_0 => (i32::from(nibble32(b, 2, i)) - 8) as f32 * h(b, 0),
        DType::Q4_1 => f32::from(nibble32(b, 4, i)) * h(b, 0) + h(b, 2),
        DType::Q5_0 => {
            let q = nibble32(b, 6, i) as u32 | (((u32_at(b, 2) >> i) & 1) << 4);
            (q as i32 - 16) as f32 * h(b, 0)
        }
        DType::Q5_1 => {
            let q = nibble32(b, 8, i) as u32 | (((u32_at(b, 4) >> i) & 1) << 4);
            q as f32 * h(b, 0) + h(b, 2)
        }
        DType::Q8_0 => f32::from(b[2 + i] as i8) * h(b, 0),
        DType::Q8_1 => f32::from(b[4 + i] as i8) * h(b, 0),
        DType::IQ4NL => h(b, 0) * f32::from(KV_IQ4[usize::from(nibble32(b, 2, i))]),
        DType::MXFP4 => {
            let d = 2f64.powi(i32::from(b[0]) - 128) as f32;
            f32::from(KV_FP4[usize::from(nibble32(b, 1, i))]) * d
        }
        DType::NVFP4 => {
            let (s, r) = (i / 16, i % 16);
            let byte = b[4 + 8 * s + r % 8];
            let q = if r < 8 { byte & 15 } else { byte >> 4 };
            let x = b[s];
            let d = if x == 0 || x == 0x7F {
                0.0
            } else {
                let (e, m) = (i32::from((x >> 3) & 15), f64::from(x & 7));
                let raw = if e == 0 {
                    m * 2f64.powi(-9)
                } else {
                    (1.0 + m / 8.0) * 2f64.powi(e - 7)
                };
                (raw * 0.5) as f32
            };
            f32::from(KV_FP4[usize::from(q)]) * d
        }
        DType::Q2K => {
            let (half, j, l) = (i / 128, (i % 128) / 32, i % 32);
            let q = (b[16 + 32 * half + l] >> (2 * j)) & 3;
            let sc = b[i / 16];
            let dl = h(b, 80) * f32::from(sc & 15);
            let ml = h(b, 82) * f32::from(sc >> 4);
            dl * f32::from(q) - ml
        }
        DType::Q3K => {
            let (half, j, l) = (i / 128, (i % 128) / 32, i % 32);
            let low = (b[32 + 32 * half + l] >> (2 * j)) & 3;
            let high_set = (b[l] >> (4 * half + j)) & 1 == 1;
            let s = i / 16;
            let sc_low = (b[96 + s % 8] >> (4 * (s / 8))) & 15;
            let sc_high = (b[96 + 8 + s % 4] >> (2 * (s / 4))) & 3;
            let scale = i32::from(sc_low | (sc_high << 4)) - 32;
            let q = i32::from(low) - if high_set { 0 } else { 4 };
            (h(b, 108) * scale as f32) * q as f32
        }
        DType::Q4K | DType::Q5K => {
            let (sub, l) = (i / 32, i % 32);
            let qs_off = if dtype == DType::Q4K { 16 } else { 48 };
            let byte = b[qs_off + 32 * (sub / 2) + l];
            let mut q = if sub % 2 == 0 { byte & 15 } else { byte >> 4 };
            if dtype == DType::Q5K {
                q += ((b[16 + l] >> sub) & 1) << 4;
            }
            let (sc, m) = k4_scale_min(b, 4, sub);
            (h(b, 0) * sc) * f32::from(q) - h(b, 2) * m
        }
        DType::Q6K => {
            let (half, quarter, l) = (i / 128, (i % 128) / 32, i % 32);
            let ql = b[64 * half + l + 32 * (quarter % 2)];
            let low = if quarter < 2 { ql & 15 } else { ql >> 4 };
            let high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
            let q = i32::from(low | (high << 4)) - 32;
            let sc = f32::from(b[192 + i / 16] as i8);
            h(b, 208) * sc * q as f32
        }
        DType::Q8K => f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * f32::from(b[4 + i] as i8),
        DType::IQ4XS => {
            let (ib, r) = (i / 32, i % 32);
            let byte = b[8 + 16 * ib + r % 16];
            let q = if r < 16 { byte & 15 } else { byte >> 4 };
            let low = (b[4 + ib / 2] >> (4 * (ib % 2))) & 15;
            let high = (u16_at(b, 2) >> (2 * ib)) & 3;
            let ls = i32::from(low) | (i32::from(high) << 4);
            (h(b, 0) * (ls - 32) as f32) * f32::from(KV_IQ4[usize::from(q)])
        }
        DType::TQ2_0 => {
            let (half, l, m) = (i / 128, (i % 128) / 32, i % 32);
            let q = ((b[32 * half + m] >> (2 * l)) & 3) as i8;
            f32::from(q - 1) * h(b, 64)
        }
        DType::TQ1_0 => {
            let (byte, n) = if i < 160 {
                (b[i % 32], i / 32)
            } else if i < 240 {
                (b[32 + (i - 160) % 16], (i - 160) / 16)
            } else {
                (b[48 + (i - 240) % 4], (i - 240) / 4)
            };
            let q = byte.wrapping_mul(3u8.pow(n as u32));
            let t = ((u16::from(q) * 3) >> 8) as i32 - 1;
            t as f32 * h(b, 52)
        }
        DType::IQ2XXS => {
            let (ib32, l, j) = (i / 32, (i % 32) / 8, i % 8);
            let base = 2 + 8 * ib32;
            let aux = u32_at(b, base + 4);
            let db = h(b, 0) * (0.5 + (aux >> 28) as f32) * 0.25;
            let grid = byte_of(IQ2XXS_GRID[usize::from(b[base + l])], j);
            db * f32::from(grid) * pattern_sign((aux >> (7 * l)) & 127, j)
        }
        DType::IQ2XS => {
            let (g, ib32, j) = (i / 8, i / 32, i % 8);
            let q = u16_at(b, 2 + 2 * g);
            let sc = (b[66 + ib32] >> (4 * ((g % 4) / 2))) & 15;
            let db = h(b, 0) * (0.5 + f32::from(sc)) * 0.25;
            let grid = byte_of(IQ2XS_GRID[usize::from(q & 511)], j);
            db * f32::from(grid) * pattern_sign(u32::from(q >> 9), j)
        }
        DType::IQ2S => {
            let (g, ib32, j) = (i / 8, i / 32, i % 8);
            let index =
                usize::from(b[2 + g]) | (usize::from((b[66 + ib32] >> (2 * (g % 4))) & 3) << 8);
            let sc = (b[74 + ib32] >> (4 * ((g % 4) / 2))) & 15;
            let db = h(b, 0) * (0.5 + f32::from(sc)) * 0.25;
            let sign = if (b[34 + g] >> j) & 1 == 1 { -1.0 } else { 1.0 };
            db * f32::from(byte_of(IQ2S_GRID[index], j)) * sign
        }
        DType::IQ3XXS => {
            let (ib32, l, j) = (i / 32, (i % 32) / 8, i % 8);
            let aux = u32_at(b, 66 + 4 * ib32);
            let db = h(b, 0) * (0.5 + (aux >> 28) as f32) * 0.5;
            let grid = IQ3XXS_GRID[usize::from(b[2 + i / 4])];
            db * f32::from((grid >> (8 * (i % 4))) as u8) * pattern_sign((aux >> (7 * l)) & 127, j)
        }
        DType::IQ3S => {
            let k = i / 4;
            let index = usize::from(b[2 + k]) | (usize::from((b[66 + i / 32] >> (k % 8)) & 1) << 8);
            let sc = (b[106 + i / 64] >> (4 * ((i / 32) % 2))) & 15;
            let db = h(b, 0) * f32::from(1 + 2 * sc);
            let sign = if (b[74 + i / 8] >> (i % 8)) & 1 == 1 {
                -1.0
            } else {
                1.0
            };
            db * f32::from((IQ3S_GRID[index] >> (8 * (i % 4))) as u8) * sign
        }
        DType::IQ1S => {
            let (g, ib, j) = (i / 8, i / 32, i % 8);
            let qh = u16_at(b, 34 + 2 * ib);
            let index = usize::from(b[2 + g]) | (usize::from((qh >> (3 * (g % 4))) & 7) << 8);
            let dl = h(b, 0) * f32::from(2 * ((qh >> 12) & 7) + 1);
            let delta = if qh >> 15 == 1 { -0.125 } else { 0.125 };
            dl * (f32::from(byte_of(IQ1S_GRID[index], j) as i8) + delta)
        }
        DType::IQ1M => {
            let (g, ib, j) = (i / 8, i / 32, i % 8);
            let nib = (b[32 + g / 2] >> (4 * (g % 2))) & 15;
            let index = usize::from(b[g]) | (usize::from(nib & 7) << 8);
            let delta = if nib & 8 != 0 { -0.125 } else { 0.125 };
            let words: Vec<u16> = (0..4).map(|w| u16_at(b, 48 + 2 * w)).collect();
            let d_bits = (0..4).fold(0u16, |acc, w| acc | ((words[w] >> 12) << (4 * w)));
            let d = f16::from_bits(d_bits).to_f32();
            let shift = 6 * (ib % 2) + 3 * ((g % 4) / 2);
            let dl = d * f32::from(2 * ((words[ib / 2] >> shift) & 7) + 1);
            dl * (f32::from(byte_of(IQ1S_GRID[index], j) as i8) + delta)
        }
        _ => return None,
    };
    Some(v)
}
