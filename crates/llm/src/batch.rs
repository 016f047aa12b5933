//! What one decode call consumes: tokens or embeddings, their positions, attention flags.

/// The inputs of a batch.
#[derive(Debug, Clone, Copy)]
pub enum BatchInput<'a> {
    Tokens(&'a [u32]),
    /// Row-major `[n, n_embd_inp]` embeddings (media encoder output).
    Embeddings(&'a [f32]),
}

/// Which rows of the batch produce logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    None,
    Last,
    All,
}

/// A batch for [`crate::Model::decode`].
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub input: BatchInput<'a>,
    /// One position per token, or for M-RoPE models four blocks of n values: `[t.., y.., x.., e..]`.
    pub pos: &'a [i32],
    /// Tokens of this batch see each other regardless of order (Gemma 3 image tokens).
    pub non_causal: bool,
    pub logits: Logits,
}

impl<'a> Batch<'a> {
    /// Text tokens at consecutive positions, logits for the last one.
    pub fn tokens(tokens: &'a [u32], pos: &'a [i32]) -> Self {
        Self {
            input: BatchInput::Tokens(tokens),
            pos,
            non_causal: false,
            logits: Logits::Last,
        }
    }
}

/// Positions `start..start+n`, repeated for every component (`n_comp` is 1, or 4 for M-RoPE).
pub fn sequential_positions(start: i32, n: usize, n_comp: usize) -> Vec<i32> {
    let one: Vec<i32> = (0..n as i32).map(|i| start + i).collect();
    let mut out = Vec::with_capacity(n * n_comp);
    for c in 0..n_comp {
        if c < 3 {
            out.extend_from_slice(&one);
        } else {
            out.extend(std::iter::repeat_n(0, n));
        }
    }
    out
}
