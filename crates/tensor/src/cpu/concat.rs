//! Concatenation of row-major arrays along one dimension.
//!
//! With `outer = Π shape[..dim]`, each part is `outer` runs of `Π shape[dim..]` contiguous
//! values; the output interleaves them run by run, so the copy is a sequence of memcpys.

use rayon::prelude::*;

/// Concatenates `parts` (each `(data, shape)`, equal rank, equal sizes except along `dim`)
/// into `out`. Panics on inconsistent shapes (the ops layer checks them first).
pub fn concat<T: Copy + Send + Sync>(parts: &[(&[T], &[usize])], dim: usize, out: &mut [T]) {
    let Some(&(_, first)) = parts.first() else {
        assert!(out.is_empty(), "concat: no parts but a non-empty output");
        return;
    };
    assert!(
        dim < first.len(),
        "concat: dim {dim} of rank {}",
        first.len()
    );
    let outer: usize = first[..dim].iter().product();
    let runs: Vec<usize> = parts
        .iter()
        .map(|(data, shape)| {
            assert!(
                shape.len() == first.len()
                    && shape
                        .iter()
                        .zip(first)
                        .enumerate()
                        .all(|(i, (a, b))| i == dim || a == b),
                "concat: shape {shape:?} does not match {first:?} outside dim {dim}"
            );
            let run: usize = shape[dim..].iter().product();
            assert_eq!(data.len(), outer * run, "concat: data length of {shape:?}");
            run
        })
        .collect();
    let out_run: usize = runs.iter().sum();
    assert_eq!(out.len(), outer * out_run, "concat: output length");
    if out_run == 0 {
        return;
    }
    out.par_chunks_mut(out_run)
        .enumerate()
        .with_min_len((1 << 14) / out_run + 1)
        .for_each(|(o, dst)| {
            let mut at = 0;
            for ((data, _), &run) in parts.iter().zip(&runs) {
                dst[at..at + run].copy_from_slice(&data[o * run..(o + 1) * run]);
                at += run;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_rows_and_columns() {
        let a = [1, 2, 3, 4]; // [2, 2]
        let b = [5, 6]; // [2, 1] or [1, 2]
        let mut out = [0; 6];
        concat(&[(&a[..], &[2, 2][..]), (&b[..], &[2, 1][..])], 1, &mut out);
        assert_eq!(out, [1, 2, 5, 3, 4, 6]);
        concat(&[(&a[..], &[2, 2][..]), (&b[..], &[1, 2][..])], 0, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6]);
    }
}
