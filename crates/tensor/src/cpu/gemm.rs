//! Blocked GEMM for `out[n, m] = x[n, k] · w[m, k]ᵀ` with f32 / f16 / bf16 weights.
//!
//! Shape of the computation (Goto-style cache blocking):
//! - x is cut into chunks of rows (about 24 MB) that stay in the last-level cache while
//!   every task reads them; the micro-kernel reads panels of `MR` rows in place (one
//!   broadcast per row and `k`), only a last partial panel from a zero-padded copy.
//! - Each task owns a rectangle of `out`: up to `NC_MAX` weight rows (output columns) by a
//!   block of x rows; the plan makes the task count a multiple of the thread count, and
//!   splits the weights into narrower column blocks before it splits few x rows (a task
//!   packs its weight rows once, in panels of `NR = NV vectors` rows (`[k][NR]`, f16/bf16
//!   converted to f32 once, 16 x 16 register transposes on AVX-512), into a per-thread
//!   buffer that lives across calls).
//! - It then walks its x rows in blocks of `MC_ROWS` and `k` in blocks of `KC`: a weight
//!   micro-panel (`KC x NR`, 32 KiB) stays in L1 while it meets every x panel of the row
//!   block (from L2, the next panel prefetched); the `MR x NR` register tile (6 x 64 on
//!   AVX-512: 24 accumulators, 4 vector loads and 6 broadcasts per `k`) sums `KC` products
//!   per call. Partial sums of earlier `k` blocks wait in a tile buffer in L2; the last `k`
//!   block stores full tiles straight into `out`, edge tiles through the buffer. Tasks write
//!   disjoint rectangles, so none shares memory with another. Each output is one FMA chain
//!   over `k` in order, so neither the blocking nor the chunking ever changes a result.
//!
//! Measured (criterion `gemm/`, 2 threads, AMD EPYC with two 512-bit FMA units per core):
//! the 12 x 32 tile (14 loads per 24 FMAs) ran at 70–80% of the FMA peak, the 6 x 64 tile
//! (10 loads) at 75–95%, ~7% faster in interleaved runs; an 8 x 48 tile was no better.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::attention::simd::{KEYS, transpose_to_lanes};
use super::matmul_float::{Epilogue, WeightElem};
use super::simd::{Isa, Simd, dispatch};

/// Upper bound of output columns per task.
const NC_MAX: usize = 256;
/// Multiply-adds below which one task does everything.
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Register tile `(MR, NR)` of each instruction set.
fn tile(isa: Isa) -> (usize, usize) {
    match isa {
        Isa::Avx512 | Isa::Avx512Vnni => (MR_AVX512, NV_AVX512 * 16),
        _ => (MR_AVX2, NV_AVX2 * 8),
    }
}
const MR_AVX512: usize = 6;
const NV_AVX512: usize = 4;
const MR_AVX2: usize = 6;
const NV_AVX2: usize = 2;

/// One task's share of the output: rows `i0..i0 + rows`, columns `j0..j0 + cols`.
#[derive(Clone, Copy)]
pub(super) struct Block {
    pub(super) i0: usize,
    pub(super) rows: usize,
    pub(super) j0: usize,
    pub(super) cols: usize,
}

/// `out = x · wᵀ`, then `epilogue` on each block of finished rows while it is in cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm<T: WeightElem>(
    isa: Isa,
    w: &[T],
    x: &[f32],
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
    epilogue: Option<&Epilogue>,
) {
    let (mr, nr) = tile(isa);
    // Rows in chunks whose x stays in the last-level cache while every column block reads
    // it: the 13 tiles of a SmolVLM image (41 MB of x) whole came from memory once per
    // column block, and ran at 56% of the peak against 88% for 4096 rows.
    let chunk = chunk_rows(n, k, mr);
    let mut tail = Vec::new();
    for i0 in (0..n).step_by(chunk) {
        let rows = chunk.min(n - i0);
        let x = &x[i0 * k..(i0 + rows) * k];
        let xs = XPanels {
            x,
            k,
            full: rows / mr,
            tail: pack_tail(x, rows, k, mr, &mut tail),
        };
        let out = &mut out[i0 * m..(i0 + rows) * m];
        let blocks = plan(rows, m, k, mr, nr);
        let dst = OutPtr(out.as_mut_ptr());
        let out_len = out.len();
        let xs = &xs;
        blocks.into_par_iter().for_each(|b| {
            assert!(b.i0 + b.rows <= rows && b.j0 + b.cols <= m && rows * m <= out_len);
            // SAFETY: the plan's blocks are disjoint rectangles of `out` (checked in range
            // above), so no two tasks write the same element and nothing reads `out`
            // meanwhile.
            let sink = unsafe { BlockOut::new(dst, m, b, epilogue.map(|e| (*e, isa))) };
            SCRATCH.with(|scratch| {
                let scratch = &mut *scratch.borrow_mut();
                block_dispatch(isa, w, xs, k, b, sink, scratch)
            })
        });
    }
}

/// Most bytes of x in one chunk of rows. Measured (criterion, 2 threads, 32 MiB L3, x then
/// packed): 13312 x 768 x 768 ran at 51–53% of the peak whole (41 MB), 84–90% in chunks of
/// 6 to 24 MB; chunks of 6 MB cost 5–10% on shapes that fit whole (every chunk packs its
/// tasks' weights again), so only x beyond this is cut. With x read in place, 12 MB chunks
/// gave the same SmolVLM encode times as 24 MB.
const X_CHUNK_BYTES: usize = 24 << 20;
/// Fewest rows in a chunk (a wide k): enough for each thread's tasks to amortise packing
/// their weight block.
const MIN_CHUNK_ROWS: usize = 1024;

/// Rows per chunk: near-equal chunks of whole `mr`-row panels, each about
/// [`X_CHUNK_BYTES`] of x.
fn chunk_rows(n: usize, k: usize, mr: usize) -> usize {
    let target = (X_CHUNK_BYTES / (k.max(1) * 4)).max(MIN_CHUNK_ROWS);
    let chunks = n.div_ceil(target).max(1);
    n.div_ceil(chunks).next_multiple_of(mr)
}

/// `out`'s pointer, shared by tasks that write disjoint blocks of it.
#[derive(Clone, Copy)]
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: only used to write disjoint rectangles (see `gemm`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Where one task writes: its rectangle of `out` (row stride `m`).
pub(super) struct BlockOut<'e> {
    ptr: OutPtr,
    pub(super) m: usize,
    block: Block,
    /// Block rows covered by whole register tiles (stored directly by the last k block).
    pub(super) full_rows: usize,
    /// Applied to rows once they are final (`finish_rows`).
    epilogue: Option<(Epilogue<'e>, Isa)>,
}

impl<'e> BlockOut<'e> {
    /// # Safety
    /// `block` lies inside `out` (`[.., m]`) and no other live `BlockOut` overlaps it.
    pub(super) unsafe fn new(
        ptr: OutPtr,
        m: usize,
        block: Block,
        epilogue: Option<(Epilogue<'e>, Isa)>,
    ) -> Self {
        Self {
            ptr,
            m,
            block,
            full_rows: 0,
            epilogue,
        }
    }

    /// Block rows `r0..r1` hold their final sums: the epilogue, if any, runs on them.
    pub(super) fn finish_rows(&mut self, r0: usize, r1: usize) {
        let Some((epilogue, isa)) = self.epilogue else {
            return;
        };
        let (cols, j0) = (self.block.cols, self.block.j0);
        for r in r0..r1.min(self.block.rows) {
            let p = self.tile_ptr(r, 0, 1, cols);
            // SAFETY: `tile_ptr` checked that the row piece lies in this task's rectangle,
            // which no other task touches (`new`'s contract).
            let row = unsafe { std::slice::from_raw_parts_mut(p, cols) };
            epilogue.apply_row(isa, row, j0);
        }
    }

    /// Where the `rows x cols` tile at block-relative `(r, c)` starts (row stride `m`);
    /// panics unless the tile lies inside the block.
    pub(super) fn tile_ptr(&mut self, r: usize, c: usize, rows: usize, cols: usize) -> *mut f32 {
        let b = self.block;
        assert!(r + rows <= b.rows && c + cols <= b.cols);
        // SAFETY: inside this task's rectangle of `out` (`new`'s contract), just checked.
        unsafe { self.ptr.0.add((b.i0 + r) * self.m + b.j0 + c) }
    }

    /// Copies the tiles of `rows` block rows from `r0` that were not stored directly (the
    /// last column panel when it is partial, rows of a partial last row panel) from `src`
    /// (block-relative columns, stride `ld`).
    pub(super) fn write_edges(
        &mut self,
        r0: usize,
        rows: usize,
        src: &[f32],
        ld: usize,
        nr: usize,
    ) {
        let b = self.block;
        let rows = rows.min(b.rows.saturating_sub(r0));
        let full_cols = b.cols / nr * nr;
        for r in 0..rows {
            // Rows of a partial row panel were not stored directly: copy the whole row.
            let c0 = if r0 + r >= self.full_rows {
                0
            } else {
                full_cols
            };
            if c0 == b.cols {
                continue;
            }
            let row = &src[r * ld + c0..r * ld + b.cols];
            let d = self.tile_ptr(r0 + r, c0, 1, b.cols - c0);
            // SAFETY: `tile_ptr` checked that the row piece lies in the block.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), d, row.len()) };
        }
    }
}

/// Splits the output into blocks so that every thread has several tasks and their count
/// divides evenly. Each task packs its weight block (f16 to f32, transposed: about as long
/// as multiplying it by ~30 rows), so a weight block is split by x rows only where those
/// rows are many (at least [`ROWS_PER_WEIGHT_PACK`] per block); otherwise the weights are
/// split into narrower column blocks, which costs only more passes over x, from the
/// last-level cache since [`gemm`] cuts x into chunks that fit it.
pub(super) fn plan(n: usize, m: usize, k: usize, mr: usize, nr: usize) -> Vec<Block> {
    let threads = rayon::current_num_threads();
    if n * m * k < PARALLEL_MIN_MACS || threads == 1 {
        return vec![Block {
            i0: 0,
            rows: n,
            j0: 0,
            cols: m,
        }];
    }
    let want = 4 * threads;
    let col_panels = m.div_ceil(nr);
    // (columns per block, blocks) for about `blocks` blocks of whole panels.
    let columns = |blocks: usize| {
        let nc = col_panels.div_ceil(blocks.max(1)) * nr;
        (nc, m.div_ceil(nc))
    };
    let (mut nc, mut col_blocks) = columns(col_panels.div_ceil(NC_MAX / nr));
    let panels = n.div_ceil(mr);
    let max_row_blocks = panels.div_ceil(MIN_ROW_PANELS).max(1);
    let packing_row_blocks = (n / ROWS_PER_WEIGHT_PACK).clamp(1, max_row_blocks);
    let mut row_blocks = want.div_ceil(col_blocks).clamp(1, packing_row_blocks);
    if row_blocks * col_blocks < want {
        (nc, col_blocks) = columns(want.div_ceil(row_blocks).min(col_panels));
    }
    while !(row_blocks * col_blocks).is_multiple_of(threads) && row_blocks < max_row_blocks {
        row_blocks += 1;
    }
    let row_block = panels.div_ceil(row_blocks) * mr;
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

/// Fewest x panels in a task's row block.
const MIN_ROW_PANELS: usize = 16;
/// Fewest x rows per row block of a weight block that could instead be split by columns.
/// Measured (criterion, 2 threads): 1332 x 3072 x 768 took 18.1 ms in 3 column x 4 row
/// blocks, 14.4 ms in 6 column blocks; 972 x 1024 x 1024 5.2 ms in 4 x 2, 4.6 ms in 8 x 1.
const ROWS_PER_WEIGHT_PACK: usize = 768;

/// Where the micro-kernel reads x: whole panels of `MR` rows in place (row-major, the
/// broadcasts read 6 rows side by side), and a last, partial panel from a zero-padded
/// copy. Packing every panel into `[k][MR]` first cost a pass over x per call (2% of a
/// SmolVLM encode, plus clearing the 24 MB buffer it went into) and bought nothing the
/// prefetches below do not: the rows of a panel are 6 sequential streams.
struct XPanels<'a> {
    x: &'a [f32],
    k: usize,
    /// Whole panels (the tail panel's index when `tail` is not empty).
    full: usize,
    /// The partial last panel, `[k][MR]`, rows past `n` zero.
    tail: &'a [f32],
}

impl XPanels<'_> {
    /// Panel `q` from column `p0`: its first value, the stride between its rows and the
    /// stride between consecutive `k`. An address only, never dereferenced here: past the
    /// last panel it names "the next panel" for prefetching.
    fn addr(&self, q: usize, p0: usize, mr: usize) -> (*const f32, usize, usize) {
        if q < self.full || self.tail.is_empty() {
            let at = q * mr * self.k + p0;
            (self.x.as_ptr().wrapping_add(at), self.k, 1)
        } else {
            (self.tail.as_ptr().wrapping_add(p0 * mr), 1, mr)
        }
    }

    /// [`Self::addr`] of a panel the micro-kernel reads for `kc` values from `p0`; panics
    /// unless all `mr x kc` of them lie inside x or the tail copy.
    fn panel(&self, q: usize, p0: usize, kc: usize, mr: usize) -> (*const f32, usize, usize) {
        let inside = if q < self.full {
            p0 + kc <= self.k && (q + 1) * mr * self.k <= self.x.len()
        } else {
            q == self.full && (p0 + kc) * mr <= self.tail.len()
        };
        assert!(inside, "gemm: x panel {q} [{p0}, +{kc}) out of range");
        self.addr(q, p0, mr)
    }
}

/// The last `n % mr` rows of x (`n` rows of `k`) as one panel `[k][mr]`, zero-padded, in
/// `buf`; empty when `n` is a multiple of `mr`.
fn pack_tail<'b>(x: &[f32], n: usize, k: usize, mr: usize, buf: &'b mut Vec<f32>) -> &'b [f32] {
    let rows = n % mr;
    buf.clear();
    if rows == 0 {
        return buf;
    }
    buf.resize(mr * k, 0.0);
    let x = &x[(n - rows) * k..n * k];
    for (r, row) in x.chunks_exact(k).enumerate() {
        for (p, &v) in row.iter().enumerate() {
            buf[p * mr + r] = v;
        }
    }
    buf
}

fn block_dispatch<T: WeightElem>(
    isa: Isa,
    w: &[T],
    xs: &XPanels,
    k: usize,
    b: Block,
    sink: BlockOut,
    scratch: &mut Scratch,
) {
    dispatch!(isa, block_simd, block_scalar,
        <T: WeightElem> (w: &[T], xs: &XPanels, k: usize, b: Block, sink: BlockOut, scratch: &mut Scratch))
}

/// The GEMM is only planned on SIMD paths; plain loops keep the dispatch total.
fn block_scalar<T: WeightElem>(
    w: &[T],
    xs: &XPanels,
    k: usize,
    b: Block,
    mut sink: BlockOut,
    _: &mut Scratch,
) {
    let mut row = vec![0f32; b.cols];
    for r in 0..b.rows {
        let xr = &xs.x[(b.i0 + r) * k..(b.i0 + r + 1) * k];
        for (jj, o) in row.iter_mut().enumerate() {
            let wr = &w[(b.j0 + jj) * k..(b.j0 + jj + 1) * k];
            *o = xr.iter().zip(wr).map(|(a, w)| a * w.to_f32()).sum();
        }
        let d = sink.tile_ptr(r, 0, 1, b.cols);
        // SAFETY: `tile_ptr` checked that the row lies in the block.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), d, b.cols) };
        sink.finish_rows(r, r + 1);
    }
}

#[inline(always)]
fn block_simd<S: Simd, T: WeightElem>(
    s: S,
    w: &[T],
    xs: &XPanels,
    k: usize,
    b: Block,
    sink: BlockOut,
    scratch: &mut Scratch,
) {
    if S::LANES == 16 {
        block_tiles::<S, T, MR_AVX512, NV_AVX512>(s, w, xs, k, b, sink, scratch)
    } else {
        block_tiles::<S, T, MR_AVX2, NV_AVX2>(s, w, xs, k, b, sink, scratch)
    }
}

/// Floats of a weight micro-panel (`KC x NR`, 32 KiB), which stays in L1 while the x
/// panels of a row block (`MC_ROWS x KC`) come from L2: `KC = KC_FLOATS / NR`.
const KC_FLOATS: usize = 8192;
/// x rows per cache block (a multiple of both tile heights).
const MC_ROWS: usize = 192;

/// A task's packed weights, partial-sum tiles and packing stage.
type Scratch = [Vec<f32>; 3];

thread_local! {
    /// Per-thread task buffers, kept between tasks and calls: a fresh megabyte-sized
    /// allocation per task costs page faults each time.
    static SCRATCH: std::cell::RefCell<Scratch> = const {
        std::cell::RefCell::new([Vec::new(), Vec::new(), Vec::new()])
    };
}

/// `buf` with exactly `len` values (contents unspecified).
pub(super) fn sized<E: Copy + Default>(buf: &mut Vec<E>, len: usize) -> &mut [E] {
    if buf.len() < len {
        buf.resize(len, E::default());
    }
    &mut buf[..len]
}

/// One task: packs its weight rows once (`[panel][k][nr]`), then for each block of
/// `MC_ROWS` x rows and `KC` k values runs every weight micro-panel against every x panel
/// of the block. Partial sums wait in a tile buffer that stays in L2; the last k block
/// stores full tiles straight into `out` and edge tiles through the buffer.
#[inline(always)]
fn block_tiles<S: Simd, T: WeightElem, const MR: usize, const NV: usize>(
    s: S,
    w: &[T],
    xs: &XPanels,
    k: usize,
    b: Block,
    mut sink: BlockOut,
    scratch: &mut Scratch,
) {
    {
        let [wbuf, cbuf, stage] = scratch;
        let nr = NV * S::LANES;
        let kc_max = (KC_FLOATS / nr).min(256);
        let col_panels = b.cols.div_ceil(nr);
        let ldc = col_panels * nr;
        let first_panel = b.i0 / MR;
        let row_panels = b.rows.div_ceil(MR);
        sink.full_rows = b.rows / MR * MR;
        let wpack = sized(wbuf, col_panels * nr * k);
        let stage = sized(stage, nr * STAGE_K);
        for (jp, panel) in wpack.chunks_exact_mut(nr * k).enumerate() {
            let panel_cols = nr.min(b.cols - jp * nr);
            pack_w_panel(s, w, k, b.j0 + jp * nr, panel_cols, nr, panel, stage);
        }
        let mc_panels = (MC_ROWS / MR).max(1);
        let c = sized(cbuf, mc_panels * MR * ldc);
        for ic in (0..row_panels).step_by(mc_panels) {
            let ic_end = (ic + mc_panels).min(row_panels);
            let mut edge_tiles = false;
            for p0 in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - p0);
                let last = p0 + kc == k;
                for jp in 0..col_panels {
                    let wp = &wpack[jp * nr * k + p0 * nr..jp * nr * k + (p0 + kc) * nr];
                    let full_cols = (jp + 1) * nr <= b.cols;
                    for ip in ic..ic_end {
                        let q = first_panel + ip;
                        let (xp, x_row, x_step) = xs.panel(q, p0, kc, MR);
                        let ct = &mut c[(ip - ic) * MR * ldc + jp * nr..];
                        assert!(ct.len() >= (MR - 1) * ldc + nr);
                        let row0 = ip * MR;
                        let direct = last && full_cols && row0 + MR <= b.rows;
                        edge_tiles |= last && !direct;
                        let (dst, ldd) = if direct {
                            (sink.tile_ptr(row0, jp * nr, MR, nr), sink.m)
                        } else {
                            (ct.as_mut_ptr(), ldc)
                        };
                        // The next x panel's slice, fetched while this one is multiplied: a
                        // batch of tiles' x (41 MB for SmolVLM) comes from memory in short
                        // pieces the hardware prefetcher does not follow (69% -> 84% of the
                        // peak at 13312 x 768 x 3072). Only an address: never dereferenced.
                        let next = xs.addr(q + 1, p0, MR);
                        // SAFETY: xp's MR rows hold kc values each (`panel` checked), wp kc*NR
                        // values (sliced above); ct covers
                        // MR rows of NR at stride ldc (asserted); a direct tile lies inside
                        // this task's rectangle of `out` (`tile_ptr` checks it).
                        unsafe {
                            micro_kernel::<S, MR, NV>(
                                s,
                                kc,
                                (xp, x_row, x_step),
                                next,
                                wp.as_ptr(),
                                (p0 > 0).then_some(ct.as_ptr()),
                                ldc,
                                dst,
                                ldd,
                            )
                        };
                    }
                }
            }
            if edge_tiles {
                sink.write_edges(ic * MR, (ic_end - ic) * MR, c, ldc, nr);
            }
            sink.finish_rows(ic * MR, ic_end * MR);
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
        if S::LANES == 16 && nr == KEYS {
            // (`S` is AVX-512 here.) 16 x 16 register transposes: a value at a time this was ~1.5 cycles per
            // weight, 10–15% of a GEMM whose task has a few hundred rows.
            transpose_to_lanes(Isa::Avx512, stage, nr, kc, STAGE_K, &mut panel[p0 * nr..]);
            continue;
        }
        for p in 0..kc {
            let out = &mut panel[(p0 + p) * nr..(p0 + p + 1) * nr];
            for (r, o) in out.iter_mut().enumerate() {
                *o = stage[r * STAGE_K + p];
            }
        }
    }
}

/// Asks for the cache line holding `p` (a hint: `p` may point anywhere, it is not read).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch never faults and has no effect on memory contents.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// `dst[r][0..NR] = acc[r][0..NR] + sum_p x(r, p) * wp[p][0..NR]` for an `MR x NR` tile,
/// NR = NV vectors, where `x(r, p) = x.0[r * x.1 + p * x.2]` (a panel read in place or from
/// a packed copy) and `acc` is a tile of earlier partial sums (or zero): the `kc` sum stays
/// in registers and the tile is stored once.
///
/// `next` (the x panel the next call reads, same layout) is only prefetched.
///
/// # Safety
/// `x` readable at `r * x.1 + p * x.2` for `r < MR`, `p < kc`; `wp` for `kc * NV * LANES`
/// floats; `acc` readable for `MR` rows of `NV * LANES` floats at stride `lda`; `dst`
/// writable likewise at stride `ldd`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn micro_kernel<S: Simd, const MR: usize, const NV: usize>(
    s: S,
    kc: usize,
    (xp, x_row, x_step): (*const f32, usize, usize),
    next: (*const f32, usize, usize),
    wp: *const f32,
    partial: Option<*const f32>,
    lda: usize,
    dst: *mut f32,
    ldd: usize,
) {
    let l = S::LANES;
    let mut acc = [[s.zero(); NV]; MR];
    unsafe {
        if let Some(c) = partial {
            for (r, row) in acc.iter_mut().enumerate() {
                for (h, a) in row.iter_mut().enumerate() {
                    *a = s.load_ptr(c.add(r * lda + h * l));
                }
            }
        }
        let rows: [*const f32; MR] = std::array::from_fn(|r| xp.add(r * x_row));
        for p in 0..kc {
            // One line of each row of the next panel per 16 steps (a row's 16 values of a
            // line, read in place), or of the packed copy's `MR * 16` values.
            if p % 16 == 0 {
                for r in 0..MR {
                    prefetch(next.0.wrapping_add(r * next.1 + p * next.2));
                }
            }
            let b: [S::V; NV] = std::array::from_fn(|h| s.load_ptr(wp.add((p * NV + h) * l)));
            let at = p * x_step;
            for (r, row) in acc.iter_mut().enumerate() {
                let av = s.splat(*rows[r].add(at));
                for (x, bh) in row.iter_mut().zip(&b) {
                    *x = s.fma(av, *bh, *x);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (h, &a) in row.iter().enumerate() {
                s.store_ptr(dst.add(r * ldd + h * l), a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of x too big for the last-level cache run in chunks; every output is still one
    /// FMA chain over `k` in order, so each row equals, bit for bit, the same row computed
    /// in a batch small enough to run whole, across the chunk boundary too.
    #[test]
    fn rows_of_a_chunked_gemm_equal_the_same_rows_run_whole() {
        // 3500 x 2048 floats of x: 28.7 MB packed, two chunks of 1752 rows.
        let (n, k, m) = (3500, 2048, 80);
        assert!(chunk_rows(n, k, MR_AVX512) < n);
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 250.0;
        let w: Vec<half::f16> = (0..m * k)
            .map(|i| half::f16::from_f32(value(i + 3)))
            .collect();
        let x: Vec<f32> = (0..n * k).map(value).collect();
        let isa = super::super::simd::isa();
        let mut all = vec![0f32; n * m];
        gemm(isa, &w, &x, n, k, m, &mut all, None);
        let (r0, r1) = (1200, 2300);
        let mut part = vec![0f32; (r1 - r0) * m];
        gemm(isa, &w, &x[r0 * k..r1 * k], r1 - r0, k, m, &mut part, None);
        let differ = part
            .iter()
            .zip(&all[r0 * m..r1 * m])
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differ, 0, "{differ} of {} outputs differ", part.len());
    }

    #[test]
    fn the_tail_panel_is_the_last_rows_zero_padded() {
        for (n, k) in [(6, 16), (7, 33), (13, 17), (11, 5), (1, 48)] {
            let x: Vec<f32> = (0..n * k).map(|i| i as f32 * 0.5 - 7.0).collect();
            let mut buf = vec![f32::NAN; 3];
            let tail = pack_tail(&x, n, k, 6, &mut buf);
            if n % 6 == 0 {
                assert!(tail.is_empty());
                continue;
            }
            let first = n - n % 6;
            for p in 0..k {
                for r in 0..6 {
                    let i = first + r;
                    let want = if i < n { x[i * k + p] } else { 0.0 };
                    assert_eq!(tail[p * 6 + r], want, "n {n} k {k} row {i} col {p}");
                }
            }
        }
    }

    /// Every output of the tiled GEMM against a plain dot product over k in order (the same
    /// FMA chain): row counts around the panel height, so whole panels read in place and the
    /// padded tail panel both run.
    #[test]
    fn panels_in_place_and_the_tail_equal_plain_dot_products() {
        let isa = super::super::simd::isa();
        let value = |i: usize| ((i * 7919 % 1000) as f32 - 500.0) / 250.0;
        for (n, k, m) in [
            (1, 7, 3),
            (5, 64, 70),
            (6, 130, 64),
            (13, 300, 129),
            (40, 257, 200),
        ] {
            let w: Vec<half::f16> = (0..m * k)
                .map(|i| half::f16::from_f32(value(i + 3)))
                .collect();
            let x: Vec<f32> = (0..n * k).map(value).collect();
            let mut out = vec![f32::NAN; n * m];
            gemm(isa, &w, &x, n, k, m, &mut out, None);
            for i in 0..n {
                for j in 0..m {
                    let want =
                        (0..k).fold(0f32, |a, p| x[i * k + p].mul_add(w[j * k + p].to_f32(), a));
                    let got = out[i * m + j];
                    assert_eq!(got.to_bits(), want.to_bits(), "{n}x{k}x{m} at ({i}, {j})");
                }
            }
        }
    }
}
