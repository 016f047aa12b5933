//! Splitting work so that every storage binding stays under the device's binding-size limit
//! (128 MiB on WebGPU defaults and lavapipe) and every dispatch under the per-dimension
//! workgroup limit (65535).
//!
//! Tensors are cut into runs of whole rows. Each run is bound as a sub-range of its buffer
//! whose start is rounded down to the device's offset alignment; the shader is told how far
//! past the binding start the first row begins (`skip`).

use crate::{Result, TensorError};

/// Where rows of one tensor live inside its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    /// Byte offset of row 0 inside the buffer.
    pub base: u64,
    /// Bytes per row (rows are contiguous).
    pub row_bytes: u64,
}

/// One buffer sub-range to bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindRange {
    /// Binding start in the buffer: a multiple of the offset alignment.
    pub offset: u64,
    /// Binding size: a multiple of 4, at most the limit.
    pub size: u64,
    /// Bytes from `offset` to the chunk's first row.
    pub skip: u64,
}

/// A run of rows `first_row .. first_row + rows`, with one [`BindRange`] per [`RowLayout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowChunk {
    pub first_row: usize,
    pub rows: usize,
    pub ranges: Vec<BindRange>,
}

/// Cuts `n_rows` rows, stored in every buffer of `layouts`, into chunks whose bindings all fit
/// in `limit` bytes. `max_rows` caps the rows per chunk (e.g. to keep thread counts in `u32`).
pub fn plan_row_chunks(
    n_rows: usize,
    layouts: &[RowLayout],
    limit: u64,
    align: u64,
    max_rows: usize,
) -> Result<Vec<RowChunk>> {
    // Binding sizes are rounded up to 4 bytes; a limit that is a multiple of 4 keeps them in.
    let limit = limit & !3;
    // At least 16 so that vec2/vec4 arrays bound at a chunk start stay aligned.
    let align = align.max(16);
    let mut chunks = Vec::new();
    let mut row = 0usize;
    while row < n_rows {
        let mut rows = (n_rows - row).min(max_rows.max(1));
        for l in layouts {
            let start = l.base + row as u64 * l.row_bytes;
            let skip = start % align;
            let room = limit.saturating_sub(skip);
            if let Some(fit) = room.checked_div(l.row_bytes) {
                rows = rows.min(usize::try_from(fit).unwrap_or(usize::MAX));
            }
        }
        if rows == 0 {
            let widest = layouts.iter().map(|l| l.row_bytes).max().unwrap_or(0);
            return Err(TensorError::Gpu(format!(
                "a row of {widest} bytes does not fit in the {limit}-byte storage binding limit \
                 (with binding offsets aligned to {align} bytes)"
            )));
        }
        let ranges = layouts
            .iter()
            .map(|l| {
                let start = l.base + row as u64 * l.row_bytes;
                let offset = start - start % align;
                let skip = start - offset;
                let size = (skip + rows as u64 * l.row_bytes).div_ceil(4) * 4;
                BindRange {
                    offset,
                    size: size.max(4),
                    skip,
                }
            })
            .collect();
        chunks.push(RowChunk {
            first_row: row,
            rows,
            ranges,
        });
        row += rows;
    }
    Ok(chunks)
}

/// A (x, y) workgroup grid holding at least `groups` workgroups with neither side above
/// `max_per_dim`. Shaders flatten it back with `flat_workgroup` and skip the excess.
pub fn grid_2d(groups: u32, max_per_dim: u32) -> (u32, u32) {
    let max = max_per_dim.max(1);
    if groups <= max {
        return (groups.max(1), 1);
    }
    let y = groups.div_ceil(max);
    let x = groups.div_ceil(y);
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_fits_in_one_chunk() {
        let l = RowLayout {
            base: 0,
            row_bytes: 40,
        };
        let c = plan_row_chunks(10, &[l], 1 << 20, 256, usize::MAX).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].ranges[0],
            BindRange {
                offset: 0,
                size: 400,
                skip: 0
            }
        );
    }

    #[test]
    fn chunks_cover_rows_once_and_respect_limit_and_alignment() {
        // Q4_0-like rows of 18 bytes: starts fall on odd alignments.
        for (row_bytes, limit, align) in [
            (18u64, 100u64, 32u64),
            (34, 512, 256),
            (4, 64, 32),
            (72, 96, 8),
        ] {
            let layouts = [
                RowLayout { base: 6, row_bytes },
                RowLayout {
                    base: 0,
                    row_bytes: 12,
                },
            ];
            let n = 57;
            let chunks = plan_row_chunks(n, &layouts, limit, align, usize::MAX).unwrap();
            let mut next = 0;
            for c in &chunks {
                assert_eq!(c.first_row, next);
                assert!(c.rows > 0);
                next += c.rows;
                for (r, l) in c.ranges.iter().zip(&layouts) {
                    assert_eq!(r.offset % align, 0);
                    assert_eq!(r.size % 4, 0);
                    assert!(r.size <= limit, "{r:?} over {limit}");
                    assert_eq!(r.offset + r.skip, l.base + c.first_row as u64 * l.row_bytes);
                    assert!(r.skip + c.rows as u64 * l.row_bytes <= r.size);
                }
            }
            assert_eq!(next, n);
            assert!(chunks.len() > 1);
        }
    }

    #[test]
    fn max_rows_caps_chunks() {
        let l = RowLayout {
            base: 0,
            row_bytes: 4,
        };
        let c = plan_row_chunks(10, &[l], 1 << 20, 32, 3).unwrap();
        assert_eq!(
            c.iter().map(|c| c.rows).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
    }

    #[test]
    fn row_wider_than_limit_is_an_error() {
        let l = RowLayout {
            base: 0,
            row_bytes: 1000,
        };
        assert!(plan_row_chunks(2, &[l], 512, 32, usize::MAX).is_err());
    }

    #[test]
    fn no_rows_no_chunks() {
        let l = RowLayout {
            base: 0,
            row_bytes: 8,
        };
        assert!(
            plan_row_chunks(0, &[l], 64, 32, usize::MAX)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn grid_stays_under_the_dimension_limit() {
        assert_eq!(grid_2d(10, 65535), (10, 1));
        assert_eq!(grid_2d(0, 65535), (1, 1));
        for groups in [65535u32, 65536, 200_000, 65535 * 3 + 1, 4_000_000_000] {
            let (x, y) = grid_2d(groups, 65535);
            assert!(x <= 65535 && y <= 65535);
            assert!(x as u64 * y as u64 >= groups as u64);
        }
    }
}
