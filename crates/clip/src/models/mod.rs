//! The encoder trait and one module per projector family; each module defines its
//! [`Projector`](crate::projector::Projector) descriptor(s), listed in [`crate::registry`].

pub mod gemma3;
pub mod idefics3;
pub mod pixtral;
pub mod qwen2vl;
pub mod qwen3vl;
pub mod whisper;

use std::ops::Range;

use tensor::exec::Exec;

use crate::ClipError;
use crate::tower::{Progress, run_blocks};
use crate::vit::{AttnSetup, Block};

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

/// The tail of an encoder's entry point: evaluates `$body` with `$tower` (a [`TowerOn`]) and
/// `$head` bound to the GPU's blocks and head once the encoder is offloaded (returning from the
/// enclosing function), else to the CPU's. The encoder has fields `tower`, `head` (CPU) and,
/// with the `gpu` feature, `gpu_head`.
macro_rules! on_backend {
    ($enc:expr, |$tower:ident, $head:ident| $body:expr) => {{
        #[cfg(feature = "gpu")]
        if let (Some((e, blocks)), Some($head)) = ($enc.tower.gpu(), &$enc.gpu_head) {
            let $tower = &$crate::models::TowerOn { e, blocks };
            return $body;
        }
        let $tower = &$crate::models::TowerOn {
            e: &tensor::exec::CpuExec,
            blocks: &$enc.tower.blocks,
        };
        let $head = &$enc.head;
        $body
    }};
}
pub(crate) use on_backend;

/// A tower's blocks on one backend.
pub(crate) struct TowerOn<'a, E: Exec> {
    pub e: &'a E,
    pub blocks: &'a [Block<E::Vector>],
}

/// An input's tokens on a backend, and how many there are.
pub(crate) type StemOn<'a, A> = dyn Fn(&EncodeInput<'_>) -> Result<(A, usize), ClipError> + 'a;
/// An input's embeddings from its rows of the tower's output, on a backend.
pub(crate) type TailOn<'a, A> = dyn Fn(&A, &EncodeInput<'_>) -> Result<Embeddings, ClipError> + 'a;

/// A batched encode for towers whose inputs are independent token sequences (no rope), on
/// backend `E` from stem to tail: `stem` turns each input into `[n, d]` tokens, the blocks run
/// once over each run of same-size inputs (up to [`MAX_BATCH_TOKENS`] tokens) with attention
/// kept inside each input, and `tail` turns each input's rows of the output into its
/// embeddings. The row kernels and per-input attention make each result the same as an
/// encode of that input alone.
pub(crate) fn encode_batched_on<E: Exec>(
    tower: &TowerOn<'_, E>,
    inputs: &[EncodeInput<'_>],
    n_embd: usize,
    n_head: usize,
    stem: &StemOn<'_, E::Act>,
    tail: &TailOn<'_, E::Act>,
    progress: Progress<'_>,
) -> Result<Vec<Embeddings>, ClipError> {
    let e = tower.e;
    let mut out = Vec::with_capacity(inputs.len());
    let mut rest = inputs;
    while let Some(first) = rest.first() {
        let (first_x, n) = stem(first)?;
        let same_size = rest
            .iter()
            .take_while(|i| (i.width, i.height) == (first.width, first.height))
            .count();
        let take = (MAX_BATCH_TOKENS / n.max(1)).clamp(1, same_size);
        let (group, tail_inputs) = rest.split_at(take);
        let mut x = if take == 1 {
            first_x
        } else {
            let mut x = e.alloc(take * n * n_embd)?;
            e.copy_rows(&mut x, n_embd, 0, &first_x)?;
            drop(first_x);
            for (g, input) in group.iter().enumerate().skip(1) {
                let (t, nt) = stem(input)?;
                if nt != n {
                    return Err(ClipError::BadImage(format!(
                        "{}x{} made {nt} tokens, {}x{} made {n}",
                        input.width, input.height, first.width, first.height
                    )));
                }
                e.copy_rows(&mut x, n_embd, g * n, &t)?;
            }
            x
        };
        let windows: Vec<Range<usize>> = (0..take).map(|g| g * n..(g + 1) * n).collect();
        let setup = AttnSetup {
            n_head,
            rope: None,
            windows: (take > 1).then_some(&windows[..]),
        };
        let layers = 0..tower.blocks.len();
        run_blocks(
            e,
            tower.blocks,
            &mut x,
            n * take,
            layers,
            &|_| setup,
            progress,
        )?;
        if take == 1 {
            out.push(tail(&x, first)?);
        } else {
            for (g, input) in group.iter().enumerate() {
                let rows: Vec<usize> = windows[g].clone().collect();
                out.push(tail(&e.gather_rows(&x, n_embd, &rows)?, input)?);
            }
        }
        rest = tail_inputs;
    }
    Ok(out)
}
