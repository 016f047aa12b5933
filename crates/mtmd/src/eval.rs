//! Evaluating chunks through the text model: text at consecutive positions, media at the
//! positions their chunk describes (llama.cpp's `mtmd_helper_eval_chunks`).

use llm::{Logits, Model, Session};

use crate::chunk::{Chunk, Chunks, MediaChunk};
use crate::error::{MtmdError, Result};

/// What evaluating a prompt leaves behind.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// The position the next token takes (M-RoPE images advance it by less than their
    /// token count).
    pub n_past: i32,
    /// Logits of the last token, when asked for and the prompt ends with text.
    pub logits: Option<Vec<f32>>,
}

/// Decodes `chunks` into `session` after whatever it already holds. `embed` produces each
/// media chunk's embeddings (`[n_tokens, n_embd_inp]`); `logits_last` asks for the logits of the
/// prompt's last token.
pub fn eval_chunks(
    model: &Model,
    session: &mut Session,
    chunks: &Chunks,
    mut embed: impl FnMut(&MediaChunk) -> Result<Vec<f32>>,
    logits_last: bool,
) -> Result<EvalOutput> {
    let mut logits = None;
    let n_chunks = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        let want = if logits_last && i + 1 == n_chunks {
            Logits::Last
        } else {
            Logits::None
        };
        match chunk {
            Chunk::Text(tokens) => {
                if tokens.is_empty() {
                    continue;
                }
                let out = session.decode_tokens(model, tokens, want)?;
                if want == Logits::Last {
                    logits = Some(out);
                }
            }
            Chunk::Image(media) | Chunk::Audio(media) => {
                let embd = embed(media)?;
                eval_media(model, session, media, &embd)?;
            }
        }
    }
    Ok(EvalOutput {
        n_past: session.next_pos(),
        logits,
    })
}

/// Decodes one media chunk's embeddings at the session's next position.
pub fn eval_media(
    model: &Model,
    session: &mut Session,
    image: &MediaChunk,
    embd: &[f32],
) -> Result<()> {
    let n_embd = model.hparams().n_embd_inp();
    if embd.len() != image.n_tokens() * n_embd {
        return Err(MtmdError::EmbeddingSize {
            id: image.id.clone(),
            n_tokens: image.n_tokens(),
            n_embd,
            got: embd.len(),
        });
    }
    let rel_pos = image.decoder_positions(model.decoder.n_pos_comp());
    session.decode_embeddings(
        model,
        embd,
        &rel_pos,
        image.n_pos(),
        image.non_causal,
        Logits::None,
    )?;
    Ok(())
}
