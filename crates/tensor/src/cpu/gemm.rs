//! Blocked GEMM for `out[n, m] = x[n, k] · w[m, k]ᵀ` with f32 / f16 / bf16 weights.
//!
//! Shape of the computation:
//! - x is packed once into panels of `MR` rows, transposed so the `MR` values of one `k`
//!   index are adjacent (`xpack[panel][p][r]`): the micro-kernel broadcasts them.
//! - Each task owns a block of up to `NC_MAX` weight rows (output columns). It packs them
//!   one panel of `NR = 2 vectors` rows at a time (`wpanel[p][c]`, converting f16/bf16 to
//!   f32 once), then runs the `MR x NR` register-tile micro-kernel against every x panel of
//!   its rows. A tile's accumulators stay in registers over the whole `k` and are stored
//!   once: no partial sums go back and forth through memory. Both panels stream
//!   sequentially (prefetch-friendly); the weight panel (NR·k·4 bytes) is reused from L2
//!   by every x panel.
//! - Tasks write a private, tile-padded output block; blocks are copied into `out` at the
//!   end (n·m copies against n·m·k multiply-adds), so no task shares memory with another.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::matmul_float::WeightElem;
use super::simd::{Isa, Simd, dispatch};

/// Upper bound of output columns per task.
const NC_MAX: usize = 256;
/// Multiply-adds below which one task does everything.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Register tile `(MR, NR)` of each instruction set.
fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 | Isa::Avx512Vnni => (MR_AVX512, 32),
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
    let mut wpanel = vec![0f32; nr * k];
    let mut stage = vec![0f32; nr * STAGE_K];
    for jp in 0..col_panels {
        let panel_cols = nr.min(cols - jp * nr);
        pack_w_panel(
            s,
            w,
            k,
            j0 + jp * nr,
            panel_cols,
            nr,
            &mut wpanel,
            &mut stage,
        );
        for ip in 0..row_panels {
            let q = first_panel + ip;
            let xp = &xpack[q * MR * k..(q + 1) * MR * k];
            let ct = &mut c[ip * MR * ldc + jp * nr..];
            assert!(ct.len() >= (MR - 1) * ldc + nr);
            // SAFETY: slices checked above: xp holds k*MR, wpanel k*NR values, ct covers
            // MR rows of NR at stride ldc.
            unsafe {
                micro_kernel::<S, MR>(s, k, xp.as_ptr(), wpanel.as_ptr(), ct.as_mut_ptr(), ldc)
            };
        }
    }
}

/// `k` values per row widened at a time while packing (the staging buffer stays in L1).
const STAGE_K: usize = 64;

/// Weight rows `j..j+cols` (cols <= nr; missing rows are zero) as one panel `[k][nr]` of f32.
#[inline(always)]
fn pack_w_panel<S: Simd, T: WeightElem>(
    s: S,
    w: &[T],
    k: usize,
    j: usize,
    cols: usize,
    nr: usize,
    panel: &mut [f32],
    stage: &mut [f32],
) {
    let l = S::LANES;
    for p0 in (0..k).step_by(STAGE_K) {
        let kc = STAGE_K.min(k - p0);
        // Widen a [cols][kc] tile with SIMD into the stage, then transpose it into place.
        for r in 0..nr {
            let dst = &mut stage[r * STAGE_K..r * STAGE_K + kc];
            if r >= cols {
                dst.fill(0.0);
                continue;
            }
            let src = &w[(j + r) * k + p0..(j + r) * k + p0 + kc];
            let full = kc - kc % l;
            for p in (0..full).step_by(l) {
                s.store(&mut dst[p..], T::load(s, &src[p..]));
            }
            for p in full..kc {
                dst[p] = src[p].to_f32();
            }
        }
        for p in 0..kc {
            let out = &mut panel[(p0 + p) * nr..(p0 + p + 1) * nr];
            for (r, o) in out.iter_mut().enumerate() {
                *o = stage[r * STAGE_K + p];
            }
        }
    }
}

/// `c[r][0..NR] = sum_p xp[p][r] * wp[p][0..NR]` for an `MR x NR` tile, NR = 2 vectors: the
/// whole `k` sum stays in registers and the tile is stored once.
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
                s.store_ptr(c.add(r * ldc + h * l), acc[r][h]);
            }
        }
    }
}
