//! The seam between the library and a media encoder (an mmproj's encoder through `clip`, or a
//! test double that replays reference embeddings).

use std::any::Any;
use std::sync::Arc;

pub use clip::tower::Progress as EncodeProgress;
pub use clip::{Framing, Placement, TileFraming};

use crate::media::{Media, MediaKind};

/// Boxed error of an encoder; the library wraps it with the media id.
pub type EncoderError = Box<dyn std::error::Error + Send + Sync>;

/// One media chunk's worth of encoder input: the token grid the encoder will produce and the
/// encoder's own data (e.g. normalized pixels), opaque to the library.
#[derive(Clone)]
pub struct PreparedMedia {
    /// Tokens per row of the output grid (1-D media: all tokens in one row).
    pub nx: usize,
    /// Rows of the output grid.
    pub ny: usize,
    /// Embedding rows the encoder outputs; always `nx * ny`.
    pub n_tokens: usize,
    /// Where the piece goes in its media item: the whole item (most images, audio windows),
    /// or a tile or the overview of a tiled image, which the framing's
    /// [`tiles`](Framing::tiles) lays out.
    pub place: Placement,
    pub data: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for PreparedMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedMedia")
            .field("nx", &self.nx)
            .field("ny", &self.ny)
            .field("n_tokens", &self.n_tokens)
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

/// What the library needs from a media encoder (encoder tower + projector).
pub trait MediaEncoder: Send + Sync {
    /// The media kind this encoder takes.
    fn kind(&self) -> MediaKind;

    /// The text around each media item (and between its pieces).
    fn framing(&self) -> Framing;

    /// The decoder lets this encoder's tokens attend to each other regardless of order.
    fn non_causal(&self) -> bool;

    /// Width of an output row: the text model's `n_embd_inp` (for Qwen3-VL the main
    /// embedding followed by the deepstack slices).
    fn n_embd_out(&self) -> usize;

    /// Preprocesses one media item into the pieces that become its chunks, in prompt order
    /// (one for most images; tiles then the overview for tiling projectors; one per 30 s
    /// window for audio). Called while tokenizing, so it should be cheap next to `encode`.
    fn prepare(&self, media: Media<'_>) -> Result<Vec<PreparedMedia>, EncoderError>;

    /// Runs the encoder on one piece: `[n_tokens, n_embd_out]` row-major embeddings, rows in
    /// grid order (row `y * nx + x`).
    fn encode(&self, piece: &PreparedMedia) -> Result<Vec<f32>, EncoderError>;

    /// [`encode`](Self::encode), calling `progress(done, total)` as the encoder's layers
    /// finish (encoders without layers to report just encode).
    fn encode_with_progress(
        &self,
        piece: &PreparedMedia,
        progress: EncodeProgress<'_>,
    ) -> Result<Vec<f32>, EncoderError> {
        let _ = progress;
        self.encode(piece)
    }

    /// Encodes several pieces (an image's tiles, the media of several requests), one result
    /// each in order, equal to [`encode_with_progress`](Self::encode_with_progress) of each;
    /// encoders that can run same-size pieces through their tower together override this.
    fn encode_batch(
        &self,
        pieces: &[&PreparedMedia],
        progress: EncodeProgress<'_>,
    ) -> Result<Vec<Vec<f32>>, EncoderError> {
        pieces
            .iter()
            .map(|p| self.encode_with_progress(p, progress))
            .collect()
    }

    /// Approximate floating-point operations of encoding `piece` (for throughput figures);
    /// `None` when the encoder cannot tell.
    fn flops(&self, piece: &PreparedMedia) -> Option<u64> {
        let _ = piece;
        None
    }
}
