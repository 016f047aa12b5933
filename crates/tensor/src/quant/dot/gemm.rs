//! AVX-512 VNNI micro-kernels over packed panels: 16 weight rows x up to 8 activation rows.
//!
//! Lane r of every vector is weight row r; activation bytes are broadcast 4 at a time (as the
//! memory operand of `dpbusd`, so they need no register), so one `dpbusd` does 16 rows x 4
//! levels and no horizontal sums are needed. Per activation column a
//! tile keeps an i32 accumulator and an f32 accumulator in registers for the whole row.
//! Integer sums are the scalar reference's exactly; scaling follows the same formulas
//! (`d_w * d_x * isum`, K-quants `d_w * d_x * isum - dmin_w * d_x * sum(m * bsum)`), only the
//! f32 rounding order differs.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::pack::{GemmActs, PANEL_ROWS, Panel, PanelKind};
use crate::quant::blocks::{QK_K, QK32};

/// Activation columns per register tile.
pub(super) const TILE_COLS: usize = 8;

/// Computes `out[c][row_off + r] = dot(panel row r, activation column c)` for every column of
/// `acts` (`out` holds one slice per column) and the panel's valid rows. Returns false (doing
/// nothing) when the CPU lacks AVX-512 VNNI or the sizes do not fit together.
pub(super) fn gemm_panel(
    panel: &Panel,
    kind: PanelKind,
    acts: &GemmActs,
    out: &mut [&mut [f32]],
    row_off: usize,
) -> bool {
    if !super::x86::has_avx512_vnni() || !sizes_fit(panel, kind, acts, out, row_off) {
        return false;
    }
    let mut c0 = 0;
    while c0 < acts.n {
        let cols = (acts.n - c0).min(TILE_COLS);
        // SAFETY: features checked above; `sizes_fit` checked every length the kernels use.
        unsafe { dispatch(panel, kind, acts, c0, cols, out, row_off) };
        c0 += cols;
    }
    true
}

fn sizes_fit(p: &Panel, kind: PanelKind, a: &GemmActs, out: &[&mut [f32]], row_off: usize) -> bool {
    let k = p.k;
    let lanes = |units: usize| units * PANEL_ROWS;
    let (scales, sums) = match kind {
        PanelKind::Legacy { .. } => (k / QK32, k / QK32),
        PanelKind::KQuant { sub, .. } => (k / QK_K, k / sub / 2),
    };
    let panel_ok = match kind {
        PanelKind::Legacy { .. } => k.is_multiple_of(QK32),
        PanelKind::KQuant { sub, dmin } => {
            (sub == 16 || sub == 32)
                && k.is_multiple_of(QK_K)
                && p.sc.len() == lanes(k / sub)
                && p.coef.len() == lanes(sums)
                && (!dmin || p.dmin.len() == lanes(scales))
        }
    };
    panel_ok
        && p.rows <= PANEL_ROWS
        && p.q.len() == lanes(k / 4)
        && p.d.len() == lanes(scales)
        && a.k == k
        && a.blocks.len() == a.n * scales * a.block_bytes
        && a.qs_at + k / scales <= a.block_bytes
        && a.d.len() == a.n * scales
        && a.sums.len() == a.n * sums
        && out.len() >= a.n
        && out.iter().take(a.n).all(|o| o.len() >= row_off + p.rows)
}

/// Interleaves 16 staged rows of `k` unsigned levels (`levels[r * k + i]`) into the panel
/// layout `q[g * 16 + r]` = levels `4g..4g+4` of row r. Returns false without AVX-512 or when
/// the sizes do not fit.
pub(super) fn interleave_rows(levels: &[u8], k: usize, q: &mut [u32]) -> bool {
    if !super::x86::has_avx512_vnni()
        || !k.is_multiple_of(QK32)
        || levels.len() < PANEL_ROWS * k
        || q.len() < k / 4 * PANEL_ROWS
    {
        return false;
    }
    // SAFETY: features and every length checked above.
    unsafe { interleave_avx512(levels, k, q) };
    true
}

/// Per 32 levels: rows r and r + 8 go to the two 256-bit halves of one vector, then an 8 x 8
/// transpose of 4-byte words runs in both halves at once (unpack 32-bit, unpack 64-bit, then a
/// 128-bit lane merge), leaving word g of all 16 rows in output vector g.
#[target_feature(enable = "avx2,avx512f,avx512bw,avx512vl")]
unsafe fn interleave_avx512(levels: &[u8], k: usize, q: &mut [u32]) {
    unsafe {
        let src = levels.as_ptr();
        let dst = q.as_mut_ptr();
        // Result qwords: 128-bit lane 0 of a, lane 0 of b, lane 2 of a, lane 2 of b (and the
        // same for lanes 1 / 3).
        let low_lanes = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
        let high_lanes = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
        for b in 0..k / QK32 {
            let row = |r: usize| _mm256_loadu_si256(src.add(r * k + b * QK32).cast());
            let a: [__m512i; 8] = std::array::from_fn(|i| {
                _mm512_inserti64x4(_mm512_castsi256_si512(row(i)), row(i + 8), 1)
            });
            let t: [__m512i; 8] = std::array::from_fn(|i| {
                let (x, y) = (a[2 * (i / 2)], a[2 * (i / 2) + 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_epi32(x, y)
                } else {
                    _mm512_unpackhi_epi32(x, y)
                }
            });
            // u[j]: words j (lane 0) and j + 4 (lane 1) of rows 0..4; v[j]: the same of rows 4..8.
            let u = [
                _mm512_unpacklo_epi64(t[0], t[2]),
                _mm512_unpackhi_epi64(t[0], t[2]),
                _mm512_unpacklo_epi64(t[1], t[3]),
                _mm512_unpackhi_epi64(t[1], t[3]),
            ];
            let v = [
                _mm512_unpacklo_epi64(t[4], t[6]),
                _mm512_unpackhi_epi64(t[4], t[6]),
                _mm512_unpacklo_epi64(t[5], t[7]),
                _mm512_unpackhi_epi64(t[5], t[7]),
            ];
            let out = dst.add(b * QK32 / 4 * PANEL_ROWS);
            for j in 0..4 {
                let word_j = _mm512_permutex2var_epi64(u[j], low_lanes, v[j]);
                let word_j4 = _mm512_permutex2var_epi64(u[j], high_lanes, v[j]);
                _mm512_storeu_si512(out.add(j * PANEL_ROWS).cast(), word_j);
                _mm512_storeu_si512(out.add((j + 4) * PANEL_ROWS).cast(), word_j4);
            }
        }
    }
}

/// Picks the monomorphized tile for the kind and the column count (1..=8).
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dispatch(
    p: &Panel,
    kind: PanelKind,
    a: &GemmActs,
    c0: usize,
    cols: usize,
    out: &mut [&mut [f32]],
    row_off: usize,
) {
    macro_rules! by_cols {
        ($tile:ident $(, $g:expr)*) => {
            match cols {
                1 => $tile::<1 $(, $g)*>(p, a, c0, out, row_off),
                2 => $tile::<2 $(, $g)*>(p, a, c0, out, row_off),
                3 => $tile::<3 $(, $g)*>(p, a, c0, out, row_off),
                4 => $tile::<4 $(, $g)*>(p, a, c0, out, row_off),
                5 => $tile::<5 $(, $g)*>(p, a, c0, out, row_off),
                6 => $tile::<6 $(, $g)*>(p, a, c0, out, row_off),
                7 => $tile::<7 $(, $g)*>(p, a, c0, out, row_off),
                _ => $tile::<8 $(, $g)*>(p, a, c0, out, row_off),
            }
        };
    }
    unsafe {
        match kind {
            PanelKind::Legacy { .. } => by_cols!(legacy_tile),
            PanelKind::KQuant {
                sub: 32,
                dmin: true,
            } => by_cols!(k_tile, 32, true),
            PanelKind::KQuant {
                sub: 32,
                dmin: false,
            } => by_cols!(k_tile, 32, false),
            PanelKind::KQuant { sub: _, dmin: true } => by_cols!(k_tile, 16, true),
            PanelKind::KQuant {
                sub: _,
                dmin: false,
            } => by_cols!(k_tile, 16, false),
        }
    }
}

/// Broadcast of the i32 at `p` (4 activation bytes, or a pair of i16 sums).
#[inline(always)]
unsafe fn bcast_i32(p: *const i32) -> __m512i {
    unsafe { _mm512_set1_epi32(std::ptr::read_unaligned(p)) }
}

#[inline(always)]
unsafe fn store_rows(out: &mut [f32], row_off: usize, rows: usize, v: __m512) {
    unsafe {
        let mask: __mmask16 = if rows >= PANEL_ROWS {
            0xFFFF
        } else {
            (1u16 << rows) - 1
        };
        _mm512_mask_storeu_ps(out.as_mut_ptr().add(row_off), mask, v);
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn legacy_tile<const C: usize>(
    p: &Panel,
    a: &GemmActs,
    c0: usize,
    out: &mut [&mut [f32]],
    row_off: usize,
) {
    unsafe {
        let k = p.k;
        let blocks = k / QK32;
        // Levels of block b of column c: xs[c] + b * block_bytes.
        let xs: [*const u8; C] = std::array::from_fn(|c| {
            a.blocks
                .as_ptr()
                .add((c0 + c) * blocks * a.block_bytes + a.qs_at)
        });
        let ds: [*const f32; C] = std::array::from_fn(|c| a.d.as_ptr().add((c0 + c) * blocks));
        let sums: [*const i32; C] = std::array::from_fn(|c| a.sums.as_ptr().add((c0 + c) * blocks));
        let mut f = [_mm512_setzero_ps(); C];
        for b in 0..blocks {
            let q = p.q.as_ptr().add(b * QK32 / 4 * PANEL_ROWS);
            let w: [__m512i; 8] =
                std::array::from_fn(|g| _mm512_loadu_si512(q.add(PANEL_ROWS * g).cast()));
            let dw = _mm512_loadu_ps(p.d.as_ptr().add(b * PANEL_ROWS));
            for c in 0..C {
                let x = xs[c].add(b * a.block_bytes).cast::<i32>();
                // Starts from -offset * sum(x): the unsigned weights' offset, removed.
                let mut acc = bcast_i32(sums[c].add(b));
                for (g, w) in w.iter().enumerate() {
                    acc = _mm512_dpbusd_epi32(acc, *w, bcast_i32(x.add(g)));
                }
                let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*ds[c].add(b)));
                f[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, f[c]);
            }
        }
        for (c, f) in f.into_iter().enumerate() {
            store_rows(out[c0 + c], row_off, p.rows, f);
        }
    }
}

#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn k_tile<const C: usize, const SUB: usize, const DMIN: bool>(
    p: &Panel,
    a: &GemmActs,
    c0: usize,
    out: &mut [&mut [f32]],
    row_off: usize,
) {
    unsafe {
        let k = p.k;
        let supers = k / QK_K;
        let subs = QK_K / SUB;
        let groups = SUB / 4;
        let pairs = subs / 2;
        // Levels of super-block sb of column c: xs[c] + sb * block_bytes.
        let xs: [*const u8; C] = std::array::from_fn(|c| {
            a.blocks
                .as_ptr()
                .add((c0 + c) * supers * a.block_bytes + a.qs_at)
        });
        let ds: [*const f32; C] = std::array::from_fn(|c| a.d.as_ptr().add((c0 + c) * supers));
        let sums: [*const i32; C] =
            std::array::from_fn(|c| a.sums.as_ptr().add((c0 + c) * supers * pairs));
        let mut f = [_mm512_setzero_ps(); C];
        for sb in 0..supers {
            let mut acc = [_mm512_setzero_si512(); C];
            for j in 0..subs {
                let start = sb * QK_K + j * SUB;
                let q = p.q.as_ptr().add(start / 4 * PANEL_ROWS);
                let w: [__m512i; 8] = std::array::from_fn(|g| {
                    if g < groups {
                        _mm512_loadu_si512(q.add(PANEL_ROWS * g).cast())
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                let sc = _mm512_loadu_si512(p.sc.as_ptr().add((sb * subs + j) * PANEL_ROWS).cast());
                for c in 0..C {
                    let x = xs[c].add(sb * a.block_bytes + j * SUB).cast::<i32>();
                    let mut s = _mm512_setzero_si512();
                    for g in 0..groups {
                        s = _mm512_dpbusd_epi32(s, w[g], bcast_i32(x.add(g)));
                    }
                    acc[c] = _mm512_add_epi32(acc[c], _mm512_mullo_epi32(s, sc));
                }
            }
            let dw = _mm512_loadu_ps(p.d.as_ptr().add(sb * PANEL_ROWS));
            let coef = p.coef.as_ptr().add(sb * pairs * PANEL_ROWS);
            for c in 0..C {
                let dx = _mm512_set1_ps(*ds[c].add(sb));
                let xsum = sums[c].add(sb * pairs);
                let mut term = _mm512_setzero_si512();
                for pp in 0..pairs {
                    let cf = _mm512_loadu_si512(coef.add(pp * PANEL_ROWS).cast());
                    term = _mm512_dpwssd_epi32(term, cf, bcast_i32(xsum.add(pp)));
                }
                if DMIN {
                    let dmin = _mm512_loadu_ps(p.dmin.as_ptr().add(sb * PANEL_ROWS));
                    f[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[c]), _mm512_mul_ps(dw, dx), f[c]);
                    f[c] =
                        _mm512_fnmadd_ps(_mm512_cvtepi32_ps(term), _mm512_mul_ps(dmin, dx), f[c]);
                } else {
                    let isum = _mm512_sub_epi32(acc[c], term);
                    f[c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, dx), f[c]);
                }
            }
        }
        for (c, f) in f.into_iter().enumerate() {
            store_rows(out[c0 + c], row_off, p.rows, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::quant::dot::pack::{gemm_acts, pack_panel, panel_kind};
    use crate::quant::dot::{Isa, activation_type, kernel_for, quantize_activations_with};

    /// Random block bytes with every f16 scale field forced to a small finite value.
    fn random_rows(t: DType, rows: usize, k: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut bytes: Vec<u8> = (0..rows * k / t.block_size() * t.type_size())
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect();
        let offsets: &[usize] = match t {
            DType::Q4K | DType::Q5K => &[0, 2],
            DType::Q2K => &[80, 82],
            DType::Q3K => &[108],
            DType::Q6K => &[208],
            _ => &[0],
        };
        for (i, block) in bytes.chunks_exact_mut(t.type_size()).enumerate() {
            for &o in offsets {
                let v = 0.001 + (i % 7) as f32 * 0.01;
                block[o..o + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        bytes
    }

    #[test]
    fn panels_match_the_scalar_dot_for_every_kind() {
        if !crate::isa::runnable_or_skip(Isa::Avx512Vnni, "packed GEMM panels") {
            return;
        }
        let types = [
            DType::Q4_0,
            DType::Q5_0,
            DType::Q8_0,
            DType::IQ4NL,
            DType::Q2K,
            DType::Q3K,
            DType::Q4K,
            DType::Q5K,
            DType::Q6K,
            DType::IQ4XS,
        ];
        let (rows, n, k) = (13, 11, 512);
        for t in types {
            let w = random_rows(t, rows, k, 99);
            let row_bytes = w.len() / rows;
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 97.0)
                .collect();
            let acts =
                quantize_activations_with(Isa::Scalar, activation_type(t).unwrap(), &x, n).unwrap();
            let kind = panel_kind(t).unwrap();
            let g = gemm_acts(&acts, kind).unwrap();
            let row_refs: Vec<&[u8]> = w.chunks_exact(row_bytes).collect();
            let mut panel = Panel::default();
            assert!(pack_panel(t, &row_refs, k, &mut panel), "{t}");
            let mut out = vec![f32::NAN; n * (rows + 3)];
            let mut cols: Vec<&mut [f32]> = out.chunks_exact_mut(rows + 3).collect();
            assert!(gemm_panel(&panel, kind, &g, &mut cols, 2), "{t}");
            let dot = kernel_for(Isa::Scalar, t).unwrap();
            for c in 0..n {
                for r in 0..rows {
                    let expected = dot(row_refs[r], acts.row(c));
                    let got = cols[c][2 + r];
                    assert!(
                        (got - expected).abs() <= 1e-5 * (1.0 + expected.abs()),
                        "{t} r{r} c{c}: {got} vs {expected}"
                    );
                }
                assert!(
                    cols[c][0].is_nan() && cols[c][rows + 2].is_nan(),
                    "{t}: wrote outside the panel rows"
                );
            }
        }
    }
}
