//! Blocked GEMM for `out[n, m] = x[n, k] · w[m, k]ᵀ` with f32 / f16 / bf16 weights.
//!
//! Shape of the computation (BLIS style):
//! - x is packed once into panels of `MR` rows, transposed so the `MR` values of one `k`
//!   index are adjacent (`xpack[panel][p][r]`): the micro-kernel broadcasts them.
//! - Each task owns a block of up to `NC` weight rows (output columns). Per `KC` slice of
//!   `k` it packs its weight rows into panels of `NR = 2 vectors` (`wpack[panel][p][c]`,
//!   converting f16/bf16 to f32 once), then runs the `MR x NR` register-tile micro-kernel
//!   over every x panel. Accumulators stay in registers for the whole `KC` slice.
//! - Tasks write a private, tile-padded output block; blocks are copied into `out` at the
//!   end (n·m copies against n·m·k multiply-adds), so no task shares memory with another.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::matmul_float::WeightElem;
use super::simd::{Isa, Simd, dispatch};

/// `k` slice per packing round: a weight panel (`NR x KC` f32) stays within L1/L2.
const KC: usize = 256;
/// Rows of x per inner block (a multiple of every MR).
const MC: usize = 96;
/// Upper bound of output columns per task.
const NC_MAX: usize = 256;
/// Multiply-adds below which one task does everything.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Register tile `(MR, NR)` of each instruction set.
fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 => (MR_AVX512, 32),
        _ => (MR_AVX2, 16),
    }
}
const MR_AVX512: usize = 8;
const MR_AVX2: usize = 6;

/// One task's share of the output: rows `i0..i0 + rows`, columns `j0..j0 + cols`.
#[derive(Clone, Copy)]
struct Block {
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
}

pub(super) fn gemm<T: WeightElem>(
    isa: Isa,
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
) {
    let (mr, nr) = tile(isa);
    let xpack = pack_x(x, n, k, mr);
    let blocks = plan(n, m, k, mr, nr);
    let results: Vec<(Block, Vec<f32>)> = blocks
        .into_par_iter()
        .map(|b| {
            let ldc = b.cols.div_ceil(nr) * nr;
            let mut c = vec![0f32; b.rows.div_ceil(mr) * mr * ldc];
            block_dispatch(isa, w, &xpack, k, b.i0, b.rows, b.j0, b.cols, &mut c);
            (b, c)
        })
        .collect();
    for (b, c) in results {
        let ldc = b.cols.div_ceil(nr) * nr;
        for r in 0..b.rows {
            let dst = (b.i0 + r) * m + b.j0;
            out[dst..dst + b.cols].copy_from_slice(&c[r * ldc..r * ldc + b.cols]);
        }
    }
}

/// Splits the output into blocks: weight-row blocks first (each packs its weights once);
/// x rows are split only when there are too few column blocks to feed every thread.
fn plan(n: usize, m: usize, k: usize, mr: usize, nr: usize) -> Vec<Block> {
    let threads = rayon::current_num_threads();
    if n * m * k < PARALLEL_MIN_MACS || threads == 1 {
        return vec![Block {
            i0: 0,
            rows: n,
            j0: 0,
            cols: m,
        }];
    }
    let nc = m.div_ceil(4 * threads).div_ceil(nr).clamp(1, NC_MAX / nr) * nr;
    let col_blocks = m.div_ceil(nc);
    let want_row_blocks = (2 * threads).div_ceil(col_blocks);
    // Row blocks of whole MR panels, at least 4 panels each.
    let row_block = n.div_ceil(want_row_blocks).div_ceil(mr).max(4) * mr;
    let mut blocks = Vec::new();
    for j0 in (0..m).step_by(nc) {
        for i0 in (0..n).step_by(row_block) {
            blocks.push(Block {
                i0,
                rows: row_block.min(n - i0),
                j0,
                cols: nc.min(m - j0),
            });
        }
    }
    blocks
}

/// x as panels of `mr` rows, each `[k][mr]` (rows past `n` are zero).
fn pack_x(x: &[f32], n: usize, k: usize, mr: usize) -> Vec<f32> {
    let panels = n.div_ceil(mr);
    let mut xpack = vec![0f32; panels * mr * k];
    let fill = |(q, dst): (usize, &mut [f32])| {
        for r in 0..mr.min(n - q * mr) {
            let row = &x[(q * mr + r) * k..(q * mr + r + 1) * k];
            for (p, &v) in row.iter().enumerate() {
                dst[p * mr + r] = v;
            }
        }
    };
    if n * k < 1 << 16 {
        xpack.chunks_mut(mr * k).enumerate().for_each(fill);
    } else {
        xpack.par_chunks_mut(mr * k).enumerate().for_each(fill);
    }
    xpack
}

fn block_dispatch<T: WeightElem>(
    isa: Isa,
    w: &[T],
    xpack: &[f32],
    k: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    c: &mut [f32],
) {
    dispatch!(isa, block_simd, block_scalar,
        <T: WeightElem> (w: &[T], xpack: &[f32], k: usize, i0: usize, rows: usize, j0: usize, cols: usize, c: &mut [f32]))
}

/// The GEMM is only planned on SIMD paths; plain loops keep the dispatch total.
fn block_scalar<T: WeightElem>(
    w: &[T],
    xpack: &[f32],
    k: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    c: &mut [f32],
) {
    let (mr, nr) = tile(Isa::Avx2);
    let ldc = cols.div_ceil(nr) * nr;
    for r in 0..rows {
        let i = i0 + r;
        let panel = &xpack[i / mr * mr * k..];
        for jj in 0..cols {
            let wr = &w[(j0 + jj) * k..(j0 + jj + 1) * k];
            c[r * ldc + jj] = (0..k)
                .map(|p| panel[p * mr + i % mr] * wr[p].to_f32())
                .sum();
        }
    }
}

#[inline(always)]
fn block_simd<S: Simd, T: WeightElem>(
    s: S,
    w: &[T],
    xpack: &[f32],
    k: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    c: &mut [f32],
) {
    if S::LANES == 16 {
        block_tiles::<S, T, MR_AVX512>(s, w, xpack, k, i0, rows, j0, cols, c)
    } else {
        block_tiles::<S, T, MR_AVX2>(s, w, xpack, k, i0, rows, j0, cols, c)
    }
}

#[inline(always)]
fn block_tiles<S: Simd, T: WeightElem, const MR: usize>(
    s: S,
    w: &[T],
    xpack: &[f32],
    k: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
    c: &mut [f32],
) {
    let nr = 2 * S::LANES;
    let col_panels = cols.div_ceil(nr);
    let ldc = col_panels * nr;
    let first_panel = i0 / MR;
    let row_panels = rows.div_ceil(MR);
    let mut wpack = vec![0f32; col_panels * nr * KC.min(k)];
    let mut row_buf = vec![0f32; KC.min(k)];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        pack_w(s, w, k, j0, cols, pc, kc, nr, &mut wpack, &mut row_buf);
        for ic in (0..row_panels).step_by(MC / MR) {
            for jp in 0..col_panels {
                let wp = &wpack[jp * nr * kc..(jp + 1) * nr * kc];
                for ip in ic..(ic + MC / MR).min(row_panels) {
                    let q = first_panel + ip;
                    let xp = &xpack[q * MR * k + pc * MR..q * MR * k + (pc + kc) * MR];
                    let ct = &mut c[ip * MR * ldc + jp * nr..];
                    assert!(ct.len() >= (MR - 1) * ldc + nr);
                    // SAFETY: slices checked above: xp holds kc*MR, wp kc*NR values, ct
                    // covers MR rows of NR at stride ldc.
                    unsafe {
                        micro_kernel::<S, MR>(
                            s,
                            kc,
                            xp.as_ptr(),
                            wp.as_ptr(),
                            ct.as_mut_ptr(),
                            ldc,
                            pc > 0,
                        )
                    };
                }
            }
        }
    }
}

/// Weight rows `j0..j0+cols`, k slice `pc..pc+kc`, into panels `[panel][p][nr]` of f32.
#[inline(always)]
fn pack_w<S: Simd, T: WeightElem>(
    s: S,
    w: &[T],
    k: usize,
    j0: usize,
    cols: usize,
    pc: usize,
    kc: usize,
    nr: usize,
    wpack: &mut [f32],
    row_buf: &mut [f32],
) {
    let l = S::LANES;
    let row_buf = &mut row_buf[..kc];
    for jj in 0..cols.div_ceil(nr) * nr {
        let panel = &mut wpack[jj / nr * nr * kc..(jj / nr + 1) * nr * kc];
        let r = jj % nr;
        if jj >= cols {
            for p in 0..kc {
                panel[p * nr + r] = 0.0;
            }
            continue;
        }
        let src = &w[(j0 + jj) * k + pc..(j0 + jj) * k + pc + kc];
        // Widen with SIMD into a contiguous buffer, then scatter at stride nr.
        let full = kc - kc % l;
        for p in (0..full).step_by(l) {
            s.store(&mut row_buf[p..], T::load(s, &src[p..]));
        }
        for p in full..kc {
            row_buf[p] = src[p].to_f32();
        }
        for (p, &v) in row_buf.iter().enumerate() {
            panel[p * nr + r] = v;
        }
    }
}

/// `c[r][0..NR] (+)= sum_p xp[p][r] * wp[p][0..NR]` for an `MR x NR` tile, NR = 2 vectors.
///
/// # Safety
/// `xp` readable for `kc * MR`, `wp` for `kc * 2 * LANES` floats; `c` writable for `MR` rows
/// of `2 * LANES` floats at stride `ldc`.
#[inline(always)]
unsafe fn micro_kernel<S: Simd, const MR: usize>(
    s: S,
    kc: usize,
    xp: *const f32,
    wp: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let l = S::LANES;
    let mut acc = [[s.zero(); 2]; MR];
    unsafe {
        for p in 0..kc {
            let b0 = s.load_ptr(wp.add(p * 2 * l));
            let b1 = s.load_ptr(wp.add(p * 2 * l + l));
            let a = xp.add(p * MR);
            for r in 0..MR {
                let av = s.splat(*a.add(r));
                acc[r][0] = s.fma(av, b0, acc[r][0]);
                acc[r][1] = s.fma(av, b1, acc[r][1]);
            }
        }
        for r in 0..MR {
            for h in 0..2 {
                let dst = c.add(r * ldc + h * l);
                let v = if accumulate {
                    s.add(s.load_ptr(dst), acc[r][h])
                } else {
                    acc[r][h]
                };
                s.store_ptr(dst, v);
            }
        }
    }
}
