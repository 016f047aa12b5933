//! Scalar reference dot products of the lattice ("IQ") types, the ternary TQ types and MXFP4.
//!
//! Same contract as `scalar`: exact integer sums per super-block (grid levels with their signs
//! times Q8_K activations, times the odd sub-block scales `2s + 1`), then ggml's f32 formula.
//! The constant factors fold the sub-block scale's fractions: IQ2 `d (2s+1) / 8`, IQ3_XXS
//! `d (2s+1) / 4`, IQ3_S `d (2s+1)`. IQ1 adds `delta * sum(x)` per group with delta 1/8.

use crate::quant::blocks::{
    BlockIQ1M, BlockIQ1S, BlockIQ2S, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, BlockMXFP4,
    BlockQ8_0, BlockQ8K, BlockTQ1_0, BlockTQ2_0, KVALUES_MXFP4, e8m0_to_f32_half, iq1m_scale,
    iq1m_scale_words,
};
use crate::quant::iq_tables::{
    IQ1M_DELTA, IQ1S_DELTA, IQ1S_GRID, IQ2S_GRID, IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID,
    KSIGNS_IQ2XS,
};

/// `sum_j grid[j] * sign_j * y[j]` over the `n` bytes of a grid entry (bit j of `signs` set
/// means negative).
#[inline]
fn grid_dot(entry: u64, n: usize, signs: u8, y: &[i8]) -> i32 {
    (0..n)
        .map(|j| {
            let g = i32::from((entry >> (8 * j)) as u8);
            let v = g * i32::from(y[j]);
            if signs & (1 << j) != 0 { -v } else { v }
        })
        .sum()
}

/// `sum_j grid[j] * y[j]` for an IQ1 grid entry (bytes are -1, 0 or 1).
#[inline]
fn iq1_grid_dot(entry: u64, y: &[i8]) -> i32 {
    (0..8)
        .map(|j| i32::from((entry >> (8 * j)) as u8 as i8) * i32::from(y[j]))
        .sum()
}

pub(super) fn dot_iq2xxs(w: &[BlockIQ2XXS], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut bsum = 0i32;
        for ib in 0..8 {
            // Per 32: four u16 = grid indices (one byte each), then 4 x 7 sign bits + 4-bit scale.
            let q = &x.qs[4 * ib..4 * ib + 4];
            let idx = u32::from(u16::from_le(q[0])) | (u32::from(u16::from_le(q[1])) << 16);
            let aux = u32::from(u16::from_le(q[2])) | (u32::from(u16::from_le(q[3])) << 16);
            let sumi: i32 = (0..4)
                .map(|l| {
                    let entry = IQ2XXS_GRID[((idx >> (8 * l)) & 0xFF) as usize];
                    let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                    grid_dot(entry, 8, signs, &y.qs[32 * ib + 8 * l..])
                })
                .sum();
            bsum += sumi * (2 * (aux >> 28) as i32 + 1);
        }
        sum += x.d.to_f32() * y.d * bsum as f32;
    }
    0.125 * sum
}

pub(super) fn dot_iq2xs(w: &[BlockIQ2XS], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut bsum = 0i32;
        for ib in 0..8 {
            let s = x.scales[ib];
            let ls = [2 * i32::from(s & 0x0F) + 1, 2 * i32::from(s >> 4) + 1];
            for l in 0..4 {
                let q = u16::from_le(x.qs[4 * ib + l]);
                let entry = IQ2XS_GRID[usize::from(q & 511)];
                let signs = KSIGNS_IQ2XS[usize::from(q >> 9)];
                bsum += ls[l / 2] * grid_dot(entry, 8, signs, &y.qs[32 * ib + 8 * l..]);
            }
        }
        sum += x.d.to_f32() * y.d * bsum as f32;
    }
    0.125 * sum
}

pub(super) fn dot_iq2s(w: &[BlockIQ2S], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (qs, signs) = x.qs.split_at(32);
        let mut bsum = 0i32;
        for ib in 0..8 {
            let s = x.scales[ib];
            let ls = [2 * i32::from(s & 0x0F) + 1, 2 * i32::from(s >> 4) + 1];
            let qh = usize::from(x.qh[ib]);
            for l in 0..4 {
                let index = usize::from(qs[4 * ib + l]) | ((qh << (8 - 2 * l)) & 0x300);
                let v = grid_dot(
                    IQ2S_GRID[index],
                    8,
                    signs[4 * ib + l],
                    &y.qs[32 * ib + 8 * l..],
                );
                bsum += ls[l / 2] * v;
            }
        }
        sum += x.d.to_f32() * y.d * bsum as f32;
    }
    0.125 * sum
}

pub(super) fn dot_iq3xxs(w: &[BlockIQ3XXS], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (qs, scales_and_signs) = x.qs.split_at(64);
        let mut bsum = 0i32;
        for ib in 0..8 {
            let s = &scales_and_signs[4 * ib..4 * ib + 4];
            let aux = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            let mut sumi = 0i32;
            for l in 0..4 {
                let signs = KSIGNS_IQ2XS[((aux >> (7 * l)) & 127) as usize];
                let y8 = &y.qs[32 * ib + 8 * l..];
                let g1 = u64::from(IQ3XXS_GRID[usize::from(qs[8 * ib + 2 * l])]);
                let g2 = u64::from(IQ3XXS_GRID[usize::from(qs[8 * ib + 2 * l + 1])]);
                sumi += grid_dot(g1 | (g2 << 32), 8, signs, y8);
            }
            bsum += sumi * (2 * (aux >> 28) as i32 + 1);
        }
        sum += x.d.to_f32() * y.d * bsum as f32;
    }
    0.25 * sum
}

pub(super) fn dot_iq3s(w: &[BlockIQ3S], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut bsum = 0i32;
        for ib in 0..8 {
            let s = x.scales[ib / 2];
            let nibble = if ib % 2 == 0 { s & 0x0F } else { s >> 4 };
            let qh = usize::from(x.qh[ib]);
            let mut sumi = 0i32;
            for l in 0..4 {
                let q = &x.qs[8 * ib + 2 * l..];
                let g1 = u64::from(IQ3S_GRID[usize::from(q[0]) | ((qh << (8 - 2 * l)) & 256)]);
                let g2 = u64::from(IQ3S_GRID[usize::from(q[1]) | ((qh << (7 - 2 * l)) & 256)]);
                sumi += grid_dot(
                    g1 | (g2 << 32),
                    8,
                    x.signs[4 * ib + l],
                    &y.qs[32 * ib + 8 * l..],
                );
            }
            bsum += sumi * (2 * i32::from(nibble) + 1);
        }
        sum += x.d.to_f32() * y.d * bsum as f32;
    }
    sum
}

pub(super) fn dot_iq1s(w: &[BlockIQ1S], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let (mut sumi, mut sumi_delta) = (0i32, 0i32);
        for ib in 0..8 {
            let qh = u16::from_le(x.qh[ib]);
            let ls = 2 * i32::from((qh >> 12) & 7) + 1;
            let delta = if qh & 0x8000 != 0 { -1 } else { 1 };
            let lsum: i32 = (0..4)
                .map(|l| {
                    let index =
                        usize::from(x.qs[4 * ib + l]) | (usize::from((qh >> (3 * l)) & 7) << 8);
                    iq1_grid_dot(IQ1S_GRID[index], &y.qs[32 * ib + 8 * l..])
                })
                .sum();
            sumi += ls * lsum;
            sumi_delta +=
                ls * delta * (i32::from(y.bsums[2 * ib]) + i32::from(y.bsums[2 * ib + 1]));
        }
        sum += x.d.to_f32() * y.d * (sumi as f32 + IQ1S_DELTA * sumi_delta as f32);
    }
    sum
}

pub(super) fn dot_iq1m(w: &[BlockIQ1M], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let sc = iq1m_scale_words(x);
        let (mut sumi, mut sumi_delta) = (0i32, 0i32);
        for ib in 0..8 {
            let word = sc[ib / 2];
            let shift = 6 * (ib % 2);
            let ls = [
                2 * i32::from((word >> shift) & 7) + 1,
                2 * i32::from((word >> (shift + 3)) & 7) + 1,
            ];
            // Per group of 8: 3 high index bits and the delta sign in one nibble of qh.
            for l in 0..4 {
                let nibble = (x.qh[2 * ib + l / 2] >> (4 * (l % 2))) & 0x0F;
                let index = usize::from(x.qs[4 * ib + l]) | (usize::from(nibble & 7) << 8);
                let y8 = &y.qs[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                let ysum: i32 = y8.iter().map(|&v| i32::from(v)).sum();
                let delta = if nibble & 8 != 0 { -1 } else { 1 };
                sumi += ls[l / 2] * iq1_grid_dot(IQ1S_GRID[index], y8);
                sumi_delta += ls[l / 2] * delta * ysum;
            }
        }
        sum += iq1m_scale(x).to_f32() * y.d * (sumi as f32 + IQ1M_DELTA * sumi_delta as f32);
    }
    sum
}

/// Trit n (0..5) of a base-3 packed byte, minus one (ggml's fixed-point trick).
#[inline]
fn trit(byte: u8, n: u32) -> i32 {
    let q = byte.wrapping_mul(3u8.pow(n));
    ((u16::from(q) * 3) >> 8) as i32 - 1
}

pub(super) fn dot_tq1_0(w: &[BlockTQ1_0], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        // Activation order: qs[0..32] trit-major (160), qs[32..48] trit-major (80), qh (16).
        let mut ys = y.qs.iter();
        let mut sumi = 0i32;
        let groups: [(&[u8], u32); 3] = [(&x.qs[..32], 5), (&x.qs[32..], 5), (&x.qh, 4)];
        for (bytes, trits) in groups {
            for n in 0..trits {
                for &b in bytes {
                    sumi += trit(b, n) * i32::from(*ys.next().unwrap_or(&0));
                }
            }
        }
        sum += sumi as f32 * (x.d.to_f32() * y.d);
    }
    sum
}

pub(super) fn dot_tq2_0(w: &[BlockTQ2_0], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let mut sumi = 0i32;
        for half in 0..2 {
            for l in 0..4 {
                for k in 0..32 {
                    let level = i32::from((x.qs[32 * half + k] >> (2 * l)) & 3) - 1;
                    sumi += level * i32::from(y.qs[128 * half + 32 * l + k]);
                }
            }
        }
        sum += sumi as f32 * (y.d * x.d.to_f32());
    }
    sum
}

pub(super) fn dot_mxfp4(w: &[BlockMXFP4], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0f32;
    for (x, y) in w.iter().zip(a) {
        let d = y.d.to_f32() * e8m0_to_f32_half(x.e);
        let sumi: i32 = (0..16)
            .map(|j| {
                let q = x.qs[j];
                i32::from(y.qs[j]) * i32::from(KVALUES_MXFP4[usize::from(q & 0x0F)])
                    + i32::from(y.qs[j + 16]) * i32::from(KVALUES_MXFP4[usize::from(q >> 4)])
            })
            .sum();
        sum += d * sumi as f32;
    }
    sum
}
