//! The encoder trait and one module per projector family; each module defines its
//! [`Projector`](crate::projector::Projector) descriptor(s), listed in [`crate::registry`].

pub mod gemma3;
pub mod idefics3;
pub mod pixtral;
pub mod qwen2vl;
pub mod qwen3vl;
pub mod whisper;

use std::ops::Range;

use crate::ClipError;
use crate::tower::{Progress, Tower};
use crate::vit::AttnSetup;

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

/// One input of a batched encode: planar pixels (or a mel window) and its size.
#[derive(Clone, Copy, Debug)]
pub struct EncodeInput<'a> {
    pub data: &'a [f32],
    pub width: usize,
    pub height: usize,
}

/// Tokens one batched tower pass takes at most: bounds the pass's activations (a 4096-patch
/// SigLIP feed-forward holds 70 MB per image: two Gemma 3 images, or eight SmolVLM tiles, per
/// pass).
pub const MAX_BATCH_TOKENS: usize = 8192;

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
    /// Encodes several inputs (an image's tiles, several images, audio windows), one
    /// [`Embeddings`] each in order, with the same results as one by one. Encoders whose
    /// tower can take same-size inputs in one pass (each attending only within itself, so
    /// every weight matrix is read once for all of them) override this.
    fn encode_batch(
        &self,
        inputs: &[EncodeInput<'_>],
        progress: Progress<'_>,
    ) -> Result<Vec<Embeddings>, ClipError> {
        inputs
            .iter()
            .map(|i| self.encode(i.data, i.width, i.height, progress))
            .collect()
    }
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

/// [`Encoder::encode`] for encoders whose work is in `encode_batch`: a batch of one.
pub(crate) fn encode_alone<E: Encoder + ?Sized>(
    encoder: &E,
    data: &[f32],
    width: usize,
    height: usize,
    progress: Progress<'_>,
) -> Result<Embeddings, ClipError> {
    let input = EncodeInput {
        data,
        width,
        height,
    };
    let mut out = encoder.encode_batch(&[input], progress)?;
    out.pop()
        .ok_or_else(|| ClipError::BadImage("the encoder made no embeddings".into()))
}

/// An input's tokens before the tower, `[n, d]`.
pub(crate) type Stem<'a> = dyn Fn(&EncodeInput<'_>) -> Result<Vec<f32>, ClipError> + 'a;
/// An input's embeddings from its rows of the tower's output.
pub(crate) type Tail<'a> = dyn Fn(&[f32], &EncodeInput<'_>) -> Result<Embeddings, ClipError> + 'a;

/// A batched encode for towers whose inputs are independent token sequences (no rope):
/// `stem` turns each input into `[n, d]` tokens, the tower runs once over each run of
/// same-size inputs (up to [`MAX_BATCH_TOKENS`] tokens) with attention kept inside each input,
/// and `tail`
/// turns each input's tower output into its embeddings. The row kernels and per-input
/// attention make each result the same as an encode of that input alone.
pub(crate) fn encode_batched(
    inputs: &[EncodeInput<'_>],
    tower: &Tower,
    n_embd: usize,
    n_head: usize,
    stem: &Stem<'_>,
    tail: &Tail<'_>,
    progress: Progress<'_>,
) -> Result<Vec<Embeddings>, ClipError> {
    let mut out = Vec::with_capacity(inputs.len());
    let mut rest = inputs;
    while let Some(first) = rest.first() {
        let mut x = stem(first)?;
        let per_input = x.len();
        let n = per_input / n_embd.max(1);
        let same_size = rest
            .iter()
            .take_while(|i| (i.width, i.height) == (first.width, first.height))
            .count();
        let take = (MAX_BATCH_TOKENS / n.max(1)).clamp(1, same_size);
        let (group, tail_inputs) = rest.split_at(take);
        x.reserve((take - 1) * per_input);
        for input in &group[1..] {
            let t = stem(input)?;
            if t.len() != per_input {
                return Err(ClipError::BadImage(format!(
                    "{}x{} made {} values of tokens, {}x{} made {per_input}",
                    input.width,
                    input.height,
                    t.len(),
                    first.width,
                    first.height
                )));
            }
            x.extend_from_slice(&t);
        }
        let windows: Vec<Range<usize>> = (0..take).map(|g| g * n..(g + 1) * n).collect();
        let setup = AttnSetup {
            n_head,
            rope: None,
            windows: (take > 1).then_some(&windows[..]),
        };
        tower.run_all(&mut x, n * take, &setup, progress)?;
        for (g, input) in group.iter().enumerate() {
            out.push(tail(&x[g * per_input..(g + 1) * per_input], input)?);
        }
        rest = tail_inputs;
    }
    Ok(out)
}
