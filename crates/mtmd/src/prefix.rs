//! Reusing a session's KV cache across prompts: what each cell holds, how much of a new
//! prompt's chunks the cache already has, and the chunks still to evaluate. An image is kept
//! or dropped whole, and at least one token is always left to evaluate (its logits start
//! the answer).

use crate::chunk::{Chunk, Chunks};

/// What one KV cell holds, to compare a new prompt with the cached one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CellKey {
    Token(u32),
    /// Cell `row` of piece `piece` of the media item with this id.
    Media {
        id: String,
        piece: usize,
        row: usize,
    },
}

pub fn chunk_keys(chunks: &Chunks) -> Vec<CellKey> {
    let mut keys = Vec::with_capacity(chunks.n_tokens());
    for chunk in chunks {
        match chunk {
            Chunk::Text(tokens) => keys.extend(tokens.iter().map(|&t| CellKey::Token(t))),
            Chunk::Image(m) | Chunk::Audio(m) => {
                keys.extend((0..m.n_tokens()).map(|row| CellKey::Media {
                    id: m.id.clone(),
                    piece: m.piece,
                    row,
                }))
            }
        }
    }
    keys
}

/// How many leading cells of `new` can stay in the cache: the common prefix with `cached`,
/// cut back to a media chunk's start when it ends inside one (media chunks are evaluated whole) and
/// to leave at least one text token to evaluate (its logits start the answer).
pub fn reusable_prefix(cached: &[CellKey], new: &[CellKey]) -> usize {
    let mut keep = cached.iter().zip(new).take_while(|(a, b)| a == b).count();
    keep = keep.min(new.len().saturating_sub(1));
    while keep > 0 && matches!(new.get(keep), Some(CellKey::Media { row, .. }) if *row > 0) {
        keep -= 1;
    }
    keep
}

/// The chunks after the first `skip` cells (a text chunk may be cut; images never are).
pub fn chunks_after(chunks: &Chunks, mut skip: usize) -> Chunks {
    let mut rest = Vec::new();
    for chunk in chunks {
        let n = chunk.n_tokens();
        if skip >= n {
            skip -= n;
            continue;
        }
        match chunk {
            Chunk::Text(tokens) if skip > 0 => rest.push(Chunk::Text(tokens[skip..].to_vec())),
            other => rest.push(other.clone()),
        }
        skip = 0;
    }
    Chunks { chunks: rest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(ids: &[u32]) -> Vec<CellKey> {
        ids.iter().map(|&t| CellKey::Token(t)).collect()
    }

    fn img(id: &str, n: usize) -> Vec<CellKey> {
        (0..n)
            .map(|row| CellKey::Media {
                id: id.into(),
                piece: 0,
                row,
            })
            .collect()
    }

    #[test]
    fn prefix_keeps_one_token_to_evaluate() {
        assert_eq!(reusable_prefix(&tok(&[1, 2, 3]), &tok(&[1, 2, 3])), 2);
        assert_eq!(reusable_prefix(&tok(&[1, 2, 3]), &tok(&[1, 2, 3, 4, 5])), 3);
        assert_eq!(reusable_prefix(&tok(&[1, 9]), &tok(&[1, 2, 3])), 1);
        assert_eq!(reusable_prefix(&[], &tok(&[1])), 0);
    }

    #[test]
    fn prefix_never_ends_inside_an_image() {
        let cached = [tok(&[1]), img("a", 4)].concat();
        let same = [tok(&[1]), img("a", 4), tok(&[7])].concat();
        assert_eq!(reusable_prefix(&cached, &same), 5);
        let other = [tok(&[1]), img("b", 4), tok(&[7])].concat();
        assert_eq!(reusable_prefix(&cached, &other), 1);
        // Cached holds only part of an image (cannot happen, but must not split one).
        let partial = [tok(&[1]), img("a", 2)].concat();
        assert_eq!(reusable_prefix(&partial, &same), 1);
    }

    #[test]
    fn suffix_cuts_text_not_images() {
        let chunks = Chunks {
            chunks: vec![Chunk::Text(vec![1, 2, 3]), Chunk::Text(vec![4, 5])],
        };
        let rest = chunks_after(&chunks, 4);
        assert!(matches!(&rest.chunks[..], [Chunk::Text(t)] if t == &vec![5]));
        let rest = chunks_after(&chunks, 1);
        assert_eq!(rest.n_tokens(), 4);
        assert!(matches!(&rest.chunks[0], Chunk::Text(t) if t == &vec![2, 3]));
    }
}
