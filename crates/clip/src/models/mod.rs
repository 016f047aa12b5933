//! The encoder trait and one module per projector family; each module defines its
//! [`Projector`](crate::projector::Projector) descriptor(s), listed in [`crate::registry`].

pub mod gemma3;
pub mod idefics3;
pub mod pixtral;
pub mod qwen2vl;
pub mod qwen3vl;
pub mod whisper;

use crate::ClipError;
use crate::tower::Progress;

/// Projector output for one image: `n_tokens` rows of `n_embd_out` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Embeddings {
    pub n_tokens: usize,
    /// Token grid (columns, rows) as the text model's M-RoPE sees it.
    pub nx: usize,
    pub ny: usize,
    /// `[n_tokens, n_embd_out]` row-major.
    pub data: Vec<f32>,
}

/// One encoder graph: its preprocessed input in, projector embeddings out. Vision encoders take
/// planar `[3, height, width]` pixels; audio encoders will take a `[n_mel, n_frames]` log-mel
/// window (`height` = mel bins, `width` = frames).
pub trait Encoder: Send + Sync {
    /// `progress` is called after each transformer block (see [`Progress`]).
    fn encode(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError>;
    /// Width of each output row (for Qwen3-VL, `n_embd * (1 + n_deepstack)`).
    fn n_embd_out(&self) -> usize;
    /// Moves the encoder's transformer blocks to the GPU of `exec`.
    #[cfg(feature = "gpu")]
    fn offload(&mut self, _exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        Ok(())
    }
    /// Whether the encoder's blocks run on a GPU.
    fn on_gpu(&self) -> bool {
        false
    }
}
