//! How much of a slot's KV cache a new prompt may keep so that the answer is bit-identical to
//! evaluating the prompt on a fresh slot.
//!
//! The matmul kernels take a different path for a few activation rows (row dot products)
//! than for many (the GEMM), and the two round differently: evaluating the last 1-4 tokens
//! of a Qwen2.5 Q4_K_M prompt as their own batch moves its logits by up to 0.44 and can
//! flip a greedy token. Within one path each row's result does not depend on the batch
//! (checked bit-exactly on the real models), so what a cell's K/V holds depends only on
//! its inputs, the cells before it and which path its batch took. We record that "batch
//! class" per cached cell and keep only a prefix whose classes match a fresh evaluation,
//! cut where the suffix's batches also get the fresh classes.

use llm::decoder::MAX_UBATCH;
use mtmd::{CellKey, Chunk, Chunks, reusable_prefix};

/// Batches of at least this many rows take the GEMM path in every matmul kernel (the
/// thresholds are 3 to 5 rows today; the margin keeps us safe if they grow a little).
pub const MIN_GEMM_ROWS: usize = 16;

/// What a slot's KV cache holds, cell by cell.
#[derive(Debug, Clone, Default)]
pub struct CacheState {
    pub keys: Vec<CellKey>,
    /// Whether each cell's batch had at least [`MIN_GEMM_ROWS`] rows.
    pub big: Vec<bool>,
}

impl CacheState {
    pub fn truncate(&mut self, n: usize) {
        self.keys.truncate(n);
        self.big.truncate(n);
    }
}

/// Batch class of every cell from `from` on when `chunks` is evaluated starting at cell
/// `from` (`from` at a chunk start or inside a text chunk): each chunk's remaining cells
/// in pieces of [`MAX_UBATCH`] from where its evaluation starts, as the decoder cuts them.
pub fn batch_classes(chunks: &Chunks, from: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(chunks.n_tokens().saturating_sub(from));
    let mut off = 0;
    for chunk in chunks {
        let end = off + chunk.n_tokens();
        let mut s = off.max(from);
        while s < end {
            let e = (s + MAX_UBATCH).min(end);
            out.extend(std::iter::repeat_n(e - s >= MIN_GEMM_ROWS, e - s));
            s = e;
        }
        off = end;
    }
    out
}

/// Start and end of the chunk holding cell `cell` (the prompt's length twice when past the
/// end), and whether it is an image.
fn chunk_around(chunks: &Chunks, cell: usize) -> (usize, usize, bool) {
    let mut off = 0;
    for chunk in chunks {
        let n = chunk.n_tokens();
        if cell < off + n {
            return (off, off + n, matches!(chunk, Chunk::Image(_)));
        }
        off += n;
    }
    (off, off, false)
}

/// The number of leading cells of `cached` that a prompt of `chunks` (`keys` =
/// `chunk_keys(chunks)`) can keep with a bit-identical result.
pub fn safe_prefix(cached: &CacheState, chunks: &Chunks, keys: &[CellKey]) -> usize {
    let fresh = batch_classes(chunks, 0);
    let same_class = cached
        .big
        .iter()
        .zip(&fresh)
        .take_while(|(a, b)| a == b)
        .count();
    let keep = reusable_prefix(&cached.keys, keys).min(same_class);
    if keep == 0 {
        return 0;
    }
    let (start, end, image) = chunk_around(chunks, keep);
    if image {
        return start;
    }
    // Cutting inside a text chunk changes how its rest is batched: fine only when the
    // classes come out as in a fresh run. A short suffix (the same prompt again, say) gets
    // a few more cells re-evaluated so that it is a GEMM batch as in the fresh run; a cut
    // where the fresh run cuts its ubatches, and the chunk's start, always batch as fresh.
    let piece_start = start + (keep - start) / MAX_UBATCH * MAX_UBATCH;
    let candidates = [
        keep,
        end.saturating_sub(MIN_GEMM_ROWS).min(keep),
        piece_start,
    ];
    candidates
        .into_iter()
        .filter(|&k| k > start && batch_classes(chunks, k) == fresh[k..])
        .max()
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mtmd::chunk_keys;

    fn text(n: usize, first: u32) -> Chunk {
        Chunk::Text((first..first + n as u32).collect())
    }

    fn state(chunks: &Chunks) -> CacheState {
        CacheState {
            keys: chunk_keys(chunks),
            big: batch_classes(chunks, 0),
        }
    }

    #[test]
    fn classes_follow_the_decoder_cuts() {
        let c = Chunks {
            chunks: vec![text(3, 0), text(MAX_UBATCH + 20, 100)],
        };
        let k = batch_classes(&c, 0);
        assert_eq!(k.len(), 3 + MAX_UBATCH + 20);
        assert!(!k[0] && !k[2]);
        assert!(k[3] && k[3 + MAX_UBATCH] && k[k.len() - 1]);
        // Cut from where evaluation starts: 30 cells left are one GEMM piece, 10 are not.
        let end = 3 + MAX_UBATCH + 20;
        assert!(batch_classes(&c, end - 30).iter().all(|&b| b));
        let k = batch_classes(&c, end - 10);
        assert_eq!(k.len(), 10);
        assert!(k.iter().all(|&b| !b));
    }

    #[test]
    fn keeps_a_long_prefix_when_the_suffix_batches_like_fresh() {
        let old = Chunks {
            chunks: vec![text(100, 0)],
        };
        let mut new_tokens: Vec<u32> = (0..80).collect();
        new_tokens.extend(1000..1040);
        let new = Chunks {
            chunks: vec![Chunk::Text(new_tokens)],
        };
        // 80 shared, suffix of 40 rows: GEMM both ways.
        assert_eq!(safe_prefix(&state(&old), &new, &chunk_keys(&new)), 80);
    }

    #[test]
    fn refuses_a_short_suffix_that_fresh_runs_as_part_of_a_big_batch() {
        let old = Chunks {
            chunks: vec![text(100, 0)],
        };
        let new = Chunks {
            chunks: vec![text(102, 0)],
        };
        // Reusing 100 cells would leave a 2-row batch (dot path) where fresh has one
        // 102-row GEMM batch: the last 16 rows are evaluated again.
        let keep = safe_prefix(&state(&old), &new, &chunk_keys(&new));
        assert_eq!(keep, 102 - MIN_GEMM_ROWS);
        // The same prompt again: likewise.
        assert_eq!(
            safe_prefix(&state(&old), &old, &chunk_keys(&old)),
            100 - MIN_GEMM_ROWS
        );
        // A fresh run whose last piece is small (512 + 3 rows): a cut inside that piece
        // keeps the few-rows path, a cut before it cannot, except where fresh cuts too.
        let long = Chunks {
            chunks: vec![text(MAX_UBATCH + 3, 0)],
        };
        assert_eq!(
            safe_prefix(&state(&long), &long, &chunk_keys(&long)),
            MAX_UBATCH + 2
        );
        let mut st = state(&long);
        st.truncate(MAX_UBATCH + 1);
        assert_eq!(safe_prefix(&st, &long, &chunk_keys(&long)), MAX_UBATCH + 1);
        st.truncate(MAX_UBATCH);
        assert_eq!(safe_prefix(&st, &long, &chunk_keys(&long)), MAX_UBATCH);
        let mut st = state(&long);
        st.truncate(MAX_UBATCH - 5);
        assert_eq!(safe_prefix(&st, &long, &chunk_keys(&long)), 0);
    }

    #[test]
    fn images_are_kept_or_dropped_whole() {
        let img = |n: usize| {
            Chunk::Image(mtmd::MediaChunk {
                kind: mtmd::MediaKind::Image,
                id: "img".into(),
                media_index: 0,
                piece: 0,
                positions: mtmd::ImagePositions::Sequential,
                non_causal: true,
                prepared: mtmd::PreparedMedia {
                    place: mtmd::Placement::Whole,
                    nx: n,
                    ny: 1,
                    n_tokens: n,
                    data: std::sync::Arc::new(()),
                },
            })
        };
        let old = Chunks {
            chunks: vec![text(20, 0), img(64), text(20, 100)],
        };
        let new = Chunks {
            chunks: vec![text(20, 0), img(64), text(30, 200)],
        };
        // Kept up to the image's end (the text after it differs from its first token).
        assert_eq!(safe_prefix(&state(&old), &new, &chunk_keys(&new)), 84);
        // A cache holding only part of the image: back to the image's start.
        let mut st = state(&old);
        st.truncate(50);
        assert_eq!(safe_prefix(&st, &new, &chunk_keys(&new)), 20);
    }

    #[test]
    fn generated_cells_do_not_match_a_prompt_batch() {
        let old = Chunks {
            chunks: vec![text(40, 0)],
        };
        let mut st = state(&old);
        // The answer: 30 tokens decoded one at a time.
        st.keys.extend((40..70).map(CellKey::Token));
        st.big.extend(std::iter::repeat_n(false, 30));
        let new = Chunks {
            chunks: vec![text(40, 0), Chunk::Text((40..100).collect())],
        };
        // A new text chunk starts at 40: the cached prompt is kept, the answer is not.
        assert_eq!(safe_prefix(&st, &new, &chunk_keys(&new)), 40);
        // One chunk holding everything: the prompt cells were batched in a 40-row piece
        // and the fresh run has one 100-row piece, both GEMM, so the 40 can stay.
        let joined = Chunks {
            chunks: vec![text(100, 0)],
        };
        assert_eq!(safe_prefix(&st, &joined, &chunk_keys(&joined)), 40);
    }
}
