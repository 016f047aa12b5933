//! The 2-D transpose kernel: `dst[j, i] = src[i, j]` for a row-major `[rows, cols]` f32
//! slice (the convolutions use it to turn `[tokens, channels]` into `[channels, tokens]`).
//!
//! Contract: `ops::permute` with the permutation `[1, 0]`; scalar reference
//! `ops::permute::reference_2d`.

use rayon::prelude::*;

/// `dst[j, i] = src[i, j]` for `src` `[rows, cols]`, in cache-sized tiles.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    const T: usize = 32;
    assert!(
        src.len() == rows * cols && dst.len() == rows * cols,
        "transpose: lengths"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    // Parallel over bands of T destination rows (= source columns).
    dst.par_chunks_mut(T * rows)
        .enumerate()
        .for_each(|(band, out)| {
            let c0 = band * T;
            let nc = out.len() / rows;
            for r0 in (0..rows).step_by(T) {
                for r in r0..(r0 + T).min(rows) {
                    for c in 0..nc {
                        out[c * rows + r] = src[r * cols + c0 + c];
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::permute::reference_2d;

    #[test]
    fn matches_reference_across_tile_borders() {
        for (r, c) in [(37, 70), (1, 5), (5, 1), (32, 32), (33, 65), (0, 3)] {
            let src: Vec<f32> = (0..r * c).map(|v| v as f32).collect();
            let mut dst = vec![0.0; r * c];
            transpose(&src, r, c, &mut dst);
            assert_eq!(dst, reference_2d(&src, r, c), "{r}x{c}");
        }
    }
}
