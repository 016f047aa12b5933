//! Splitting a prompt with media markers into chunks, the way llama.cpp's `mtmd_tokenize`
//! does (checked against the fixtures' chunk lists):
//! 1. the prompt is split at the marker;
//! 2. each text part is tokenized alone (no BOS/EOS, control-token texts recognised);
//! 3. at each marker the begin text is tokenized alone and ends the current text chunk,
//!    the media item's chunks follow (one per piece: most images have one), and the tokenized
//!    end text starts the next text chunk;
//! 4. consecutive text tokens form one chunk (empty text chunks are dropped);
//! 5. BOS goes first when the model adds it; EOS last when the model adds it.

use llm::Tokenizer;

use crate::chunk::{Chunk, Chunks};
use crate::encoder::Framing;
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
            pending.extend(piece(framing.begin));
            if !pending.is_empty() {
                chunks.push(Chunk::Text(std::mem::take(&mut pending)));
            }
            chunks.extend(media(k - 1)?);
            pending.extend(piece(framing.end));
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
