//! Splitting a prompt with media markers into chunks, the way llama.cpp's `mtmd_tokenize`
//! does (checked against the fixtures' chunk lists):
//! 1. the prompt is split at the marker;
//! 2. each text part is tokenized alone (no BOS/EOS, control-token texts recognised);
//! 3. at each marker the begin text is tokenized alone and ends the current text chunk,
//!    the media item's chunks follow (one per piece: most images have one), and the tokenized
//!    end text starts the next text chunk;
//! 4. a tiled image (Idefics3) puts its tiles first, row-major, each after its own
//!    `tile_begin(row, col)` text and before `tile_end`, with `row_end` between rows; then
//!    `before_overview`, and the overview framed by begin and end as in 3 (every text piece
//!    tokenized alone, as llama.cpp looks each of them up as one token);
//! 5. consecutive text tokens form one chunk (empty text chunks are dropped);
//! 6. BOS goes first when the model adds it; EOS last when the model adds it.

use llm::Tokenizer;

use crate::chunk::{Chunk, Chunks};
use crate::encoder::{Framing, Placement};
use crate::error::{MtmdError, Result};

/// Tokenizes `text`, calling `media(k)` for the chunks of the k-th marker's media item. The
/// number of markers must equal `n_media`.
pub fn tokenize_with_media(
    tokenizer: &Tokenizer,
    text: &str,
    marker: &str,
    framing: &Framing,
    n_media: usize,
    mut media: impl FnMut(usize) -> Result<Vec<Chunk>>,
) -> Result<Chunks> {
    if marker.is_empty() {
        return Err(MtmdError::EmptyMarker);
    }
    let parts: Vec<&str> = text.split(marker).collect();
    let markers = parts.len() - 1;
    if markers != n_media {
        return Err(MtmdError::MarkerCount {
            marker: marker.to_string(),
            markers,
            bitmaps: n_media,
        });
    }
    let piece = |s: &str| -> Vec<u32> {
        if s.is_empty() {
            Vec::new()
        } else {
            tokenizer.tokenize(s, false, true)
        }
    };

    let mut chunks = Vec::with_capacity(2 * markers + 1);
    let mut pending: Vec<u32> = Vec::new();
    if tokenizer.add_bos() {
        pending.extend(tokenizer.bos());
    }
    for (k, part) in parts.iter().enumerate() {
        if k > 0 {
            lay_out_media(&mut chunks, &mut pending, framing, media(k - 1)?, &piece)?;
        }
        pending.extend(piece(part));
    }
    if tokenizer.add_eos() {
        pending.extend(tokenizer.eos());
    }
    if !pending.is_empty() {
        chunks.push(Chunk::Text(pending));
    }
    Ok(Chunks { chunks })
}

/// Appends one media item's chunks with the framing's texts around them (rules 3 and 4):
/// the text gathered so far ends in a chunk before each media chunk.
fn lay_out_media(
    chunks: &mut Vec<Chunk>,
    pending: &mut Vec<u32>,
    framing: &Framing,
    media: Vec<Chunk>,
    piece: &impl Fn(&str) -> Vec<u32>,
) -> Result<()> {
    let mut push = |pending: &mut Vec<u32>, chunk: Chunk| {
        if !pending.is_empty() {
            chunks.push(Chunk::Text(std::mem::take(pending)));
        }
        chunks.push(chunk);
    };
    let mut last_row = None;
    let mut begun = false;
    for chunk in media {
        let place = chunk
            .as_media()
            .map_or(Placement::Whole, |m| m.prepared.place);
        match place {
            Placement::Tile { row, col } => {
                let Some(tiles) = &framing.tiles else {
                    let id = chunk.as_media().map(|m| m.id.clone()).unwrap_or_default();
                    return Err(MtmdError::UnframedTiles { id });
                };
                if last_row.is_some_and(|r| r != row) {
                    pending.extend(piece(tiles.row_end));
                }
                last_row = Some(row);
                pending.extend(piece(&(tiles.tile_begin)(
                    row as usize + 1,
                    col as usize + 1,
                )));
                push(pending, chunk);
                pending.extend(piece(tiles.tile_end));
            }
            Placement::Whole | Placement::Overview => {
                if !begun {
                    if let (Some(tiles), Some(_)) = (&framing.tiles, last_row) {
                        pending.extend(piece(tiles.before_overview));
                    }
                    pending.extend(piece(framing.begin));
                    begun = true;
                }
                push(pending, chunk);
            }
        }
    }
    if !begun && last_row.is_none() {
        // No chunks at all: the frame alone, the text before it still ending a chunk.
        pending.extend(piece(framing.begin));
        if !pending.is_empty() {
            chunks.push(Chunk::Text(std::mem::take(pending)));
        }
    }
    pending.extend(piece(framing.end));
    Ok(())
}
