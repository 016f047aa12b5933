//! The seam between the library and a media encoder (the `clip` crate's vision towers, or a
//! test double that replays reference embeddings).

use std::any::Any;
use std::sync::Arc;

use crate::bitmap::Bitmap;

/// Boxed error of an encoder; the library wraps it with the image id.
pub type EncoderError = Box<dyn std::error::Error + Send + Sync>;

/// Text the model expects around every image, and how the decoder must see image tokens.
/// It depends on the projector, as in llama.cpp's mtmd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFraming {
    /// Tokenized on its own and appended to the text before the image (`<start_of_image>`).
    pub begin: String,
    /// Tokenized on its own; starts the text after the image (`<end_of_image>`).
    pub end: String,
    /// Image tokens attend to each other regardless of order (Gemma 3).
    pub non_causal: bool,
}

impl ImageFraming {
    /// The framing llama.cpp uses for a projector type (`clip.projector_type` in the mmproj),
    /// or `None` for projectors this library does not know yet.
    pub fn for_projector(projector: &str) -> Option<Self> {
        let (begin, end, non_causal) = match projector {
            "gemma3" => ("<start_of_image>", "<end_of_image>", true),
            "qwen2vl_merger" | "qwen2.5vl_merger" | "qwen3vl_merger" => {
                ("<|vision_start|>", "<|vision_end|>", false)
            }
            _ => return None,
        };
        Some(Self {
            begin: begin.into(),
            end: end.into(),
            non_causal,
        })
    }
}

/// A bitmap after preprocessing: the token grid the encoder will produce for it and the
/// encoder's own data (e.g. normalized pixels), opaque to the library.
#[derive(Clone)]
pub struct PreparedImage {
    /// Tokens per row of the merged grid (Gemma 3: all tokens in one row).
    pub nx: usize,
    /// Rows of the merged grid.
    pub ny: usize,
    /// Embedding rows the encoder outputs; always `nx * ny`.
    pub n_tokens: usize,
    pub data: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for PreparedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedImage")
            .field("nx", &self.nx)
            .field("ny", &self.ny)
            .field("n_tokens", &self.n_tokens)
            .finish_non_exhaustive()
    }
}

/// What the library needs from an image encoder (vision tower + projector).
pub trait ImageEncoder: Send + Sync {
    /// Begin/end texts and the attention rule for image tokens.
    fn framing(&self) -> ImageFraming;

    /// Width of an output row: the text model's `n_embd_inp` (for Qwen3-VL the main
    /// embedding followed by the deepstack slices).
    fn n_embd_out(&self) -> usize;

    /// Resizes/normalizes `bitmap` and decides its token grid. Called while tokenizing, so
    /// it should be cheap next to `encode`.
    fn preprocess(&self, bitmap: &Bitmap) -> Result<PreparedImage, EncoderError>;

    /// Runs the encoder: `[n_tokens, n_embd_out]` row-major embeddings, rows in grid order
    /// (row `y * nx + x`).
    fn encode(&self, image: &PreparedImage) -> Result<Vec<f32>, EncoderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_per_projector() {
        let g = ImageFraming::for_projector("gemma3").unwrap();
        assert_eq!(
            (g.begin.as_str(), g.end.as_str()),
            ("<start_of_image>", "<end_of_image>")
        );
        assert!(g.non_causal);
        for p in ["qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger"] {
            let q = ImageFraming::for_projector(p).unwrap();
            assert_eq!(q.begin, "<|vision_start|>");
            assert_eq!(q.end, "<|vision_end|>");
            assert!(!q.non_causal);
        }
        assert!(ImageFraming::for_projector("mlp").is_none());
    }
}
