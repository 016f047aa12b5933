//! A tokenized multimodal prompt: text token runs and media placeholders, with the decoder
//! positions each chunk occupies.

use crate::encoder::PreparedMedia;
use crate::media::MediaKind;

/// How a media chunk's tokens are placed in the decoder's position space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePositions {
    /// One position per token, in order (Gemma 3, LLaVA-style models, audio).
    Sequential,
    /// Qwen M-RoPE: every token has time 0 and its (y, x) spot on the merged grid; the image
    /// takes `max(nx, ny)` positions.
    MropeGrid,
}

/// A media placeholder in a prompt (an image, one tile of an image, or an audio window):
/// what the encoder will produce and where it goes.
#[derive(Debug, Clone)]
pub struct MediaChunk {
    pub kind: MediaKind,
    /// The media item's id (file name or content hash).
    pub id: String,
    /// Index of the media item among those given to `tokenize`.
    pub media_index: usize,
    /// Index of this piece among the item's pieces (tiles, audio windows); 0 for most.
    pub piece: usize,
    pub positions: ImagePositions,
    /// Attend to each other regardless of order while decoding (Gemma 3).
    pub non_causal: bool,
    pub prepared: PreparedMedia,
}

impl MediaChunk {
    pub fn n_tokens(&self) -> usize {
        self.prepared.n_tokens
    }

    pub fn nx(&self) -> usize {
        self.prepared.nx
    }

    pub fn ny(&self) -> usize {
        self.prepared.ny
    }

    /// Positions the image advances the sequence by.
    pub fn n_pos(&self) -> usize {
        match self.positions {
            ImagePositions::Sequential => self.n_tokens(),
            ImagePositions::MropeGrid => self.nx().max(self.ny()),
        }
    }

    /// `(t, x, y)` of every row relative to the image's first position (for sequential
    /// placement all three equal the row index).
    pub fn relative_txy(&self) -> Vec<[i32; 3]> {
        let n = self.n_tokens();
        match self.positions {
            ImagePositions::Sequential => (0..n as i32).map(|i| [i, i, i]).collect(),
            ImagePositions::MropeGrid => {
                let nx = self.nx().max(1);
                (0..n)
                    .map(|i| [0, (i % nx) as i32, (i / nx) as i32])
                    .collect()
            }
        }
    }

    /// Relative positions in the layout `llm::Session::decode_embeddings` takes: with one
    /// component the row index; with four, blocks `[t.., y.., x.., e..]` (llama.cpp's M-RoPE
    /// batch layout: block 1 is the row, block 2 the column, block 3 unused and 0).
    pub fn decoder_positions(&self, n_comp: usize) -> Vec<i32> {
        let txy = self.relative_txy();
        if n_comp != 4 {
            return (0..txy.len() as i32).collect();
        }
        let n = txy.len();
        let mut out = Vec::with_capacity(4 * n);
        out.extend(txy.iter().map(|p| p[0]));
        out.extend(txy.iter().map(|p| p[2]));
        out.extend(txy.iter().map(|p| p[1]));
        out.extend(std::iter::repeat_n(0, n));
        out
    }
}

/// One piece of a multimodal prompt.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Chunk {
    /// Text token ids, decoded at consecutive positions.
    Text(Vec<u32>),
    Image(MediaChunk),
    Audio(MediaChunk),
}

impl Chunk {
    /// Wraps a media chunk in the variant of its kind.
    pub fn media(chunk: MediaChunk) -> Self {
        match chunk.kind {
            MediaKind::Image => Chunk::Image(chunk),
            MediaKind::Audio => Chunk::Audio(chunk),
        }
    }

    /// The media chunk, for image and audio chunks.
    pub fn as_media(&self) -> Option<&MediaChunk> {
        match self {
            Chunk::Text(_) => None,
            Chunk::Image(m) | Chunk::Audio(m) => Some(m),
        }
    }

    /// Tokens (KV cells) the chunk occupies.
    pub fn n_tokens(&self) -> usize {
        match self {
            Chunk::Text(t) => t.len(),
            Chunk::Image(m) | Chunk::Audio(m) => m.n_tokens(),
        }
    }

    /// Positions the chunk advances the sequence by.
    pub fn n_pos(&self) -> usize {
        match self {
            Chunk::Text(t) => t.len(),
            Chunk::Image(m) | Chunk::Audio(m) => m.n_pos(),
        }
    }
}

/// A tokenized prompt: chunks in order.
#[derive(Debug, Clone, Default)]
pub struct Chunks {
    pub chunks: Vec<Chunk>,
}

impl Chunks {
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Chunk> {
        self.chunks.iter()
    }

    /// KV cells the whole prompt fills.
    pub fn n_tokens(&self) -> usize {
        self.chunks.iter().map(Chunk::n_tokens).sum()
    }

    /// Positions the whole prompt takes (less than `n_tokens` with M-RoPE images).
    pub fn n_pos(&self) -> usize {
        self.chunks.iter().map(Chunk::n_pos).sum()
    }

    /// Position at which each chunk starts.
    pub fn pos_starts(&self) -> Vec<usize> {
        let mut at = 0;
        self.chunks
            .iter()
            .map(|c| {
                let start = at;
                at += c.n_pos();
                start
            })
            .collect()
    }
}

impl<'a> IntoIterator for &'a Chunks {
    type Item = &'a Chunk;
    type IntoIter = std::slice::Iter<'a, Chunk>;
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn image(nx: usize, ny: usize, positions: ImagePositions) -> MediaChunk {
        MediaChunk {
            kind: MediaKind::Image,
            id: "img".into(),
            media_index: 0,
            piece: 0,
            positions,
            non_causal: false,
            prepared: PreparedMedia {
                nx,
                ny,
                n_tokens: nx * ny,
                place: crate::encoder::Placement::Whole,
                data: Arc::new(()),
            },
        }
    }

    #[test]
    fn mrope_grid_positions() {
        let img = image(3, 2, ImagePositions::MropeGrid);
        assert_eq!(img.n_pos(), 3);
        assert_eq!(
            img.relative_txy(),
            vec![
                [0, 0, 0],
                [0, 1, 0],
                [0, 2, 0],
                [0, 0, 1],
                [0, 1, 1],
                [0, 2, 1]
            ]
        );
        assert_eq!(
            img.decoder_positions(4),
            vec![
                0, 0, 0, 0, 0, 0, // t
                0, 0, 0, 1, 1, 1, // y
                0, 1, 2, 0, 1, 2, // x
                0, 0, 0, 0, 0, 0, // unused
            ]
        );
        assert_eq!(image(2, 5, ImagePositions::MropeGrid).n_pos(), 5);
    }

    #[test]
    fn sequential_positions() {
        let img = image(4, 1, ImagePositions::Sequential);
        assert_eq!(img.n_pos(), 4);
        assert_eq!(img.decoder_positions(1), vec![0, 1, 2, 3]);
        assert_eq!(img.relative_txy()[2], [2, 2, 2]);
    }

    #[test]
    fn chunk_starts() {
        let chunks = Chunks {
            chunks: vec![
                Chunk::Text(vec![1, 2]),
                Chunk::Image(image(3, 3, ImagePositions::MropeGrid)),
                Chunk::Text(vec![5]),
            ],
        };
        assert_eq!(chunks.pos_starts(), vec![0, 2, 5]);
        assert_eq!(chunks.n_pos(), 6);
        assert_eq!(chunks.n_tokens(), 12);
    }
}
