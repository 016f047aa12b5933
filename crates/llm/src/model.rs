//! A loaded text model (weights, tokenizer, chat template) and a session (its KV cache).

use std::path::Path;

use crate::batch::{Batch, BatchInput, Logits, sequential_positions};
use crate::chat::ChatTemplate;
use crate::decoder::{Decoder, SeqBatch};
use crate::error::{LlmError, Result};
use crate::hparams::HParams;
use crate::kv_cache::{KvCache, KvType};
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;
use gguf::GgufFile;

/// A text model ready to run: weights used in place from the file's memory map.
pub struct Model {
    pub file: GgufFile,
    pub decoder: Decoder,
    pub tokenizer: Tokenizer,
    /// The GGUF's chat template, or the built-in format detected from the model. `Err` keeps
    /// why no template could be set up, so only chat use fails.
    pub template: std::result::Result<ChatTemplate, String>,
}

impl Model {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let file = GgufFile::open(path.as_ref())?;
        Self::from_gguf(file)
    }

    pub fn from_gguf(file: GgufFile) -> Result<Self> {
        let hp = HParams::from_gguf(&file)?;
        let weights = Weights::load(&file, &hp)?;
        let tokenizer = Tokenizer::from_gguf(&file).map_err(|e| LlmError::BadParam {
            key: "tokenizer.ggml".into(),
            detail: e.to_string(),
        })?;
        if tokenizer.n_vocab() != weights.n_vocab() {
            return Err(LlmError::BadParam {
                key: "tokenizer.ggml.tokens".into(),
                detail: format!(
                    "{} tokens but token_embd has {} rows",
                    tokenizer.n_vocab(),
                    weights.n_vocab()
                ),
            });
        }
        let template = ChatTemplate::from_gguf(&file).map_err(|e| e.to_string());
        Ok(Self {
            file,
            decoder: Decoder::new(hp, weights),
            tokenizer,
            template,
        })
    }

    /// Runs the model on `device`: on a GPU, the last `n_gpu_layers` layers (llama.cpp's
    /// `-ngl` count; `None`: every layer and the output head) move there. Sessions made
    /// afterwards keep those layers' K/V in GPU memory.
    pub fn place(&mut self, device: &tensor::Device, n_gpu_layers: Option<usize>) -> Result<()> {
        match device {
            tensor::Device::Cpu => Ok(()),
            #[cfg(feature = "gpu")]
            tensor::Device::Gpu(ctx) => {
                let all = self.hparams().n_layer + 1;
                self.decoder
                    .offload(ctx.clone(), n_gpu_layers.unwrap_or(all))
            }
        }
    }

    /// Where the decoder runs (`cpu`, or the GPU's name and the layers on it).
    pub fn device_summary(&self) -> String {
        #[cfg(feature = "gpu")]
        {
            self.decoder.placement().to_string()
        }
        #[cfg(not(feature = "gpu"))]
        {
            "cpu".to_string()
        }
    }

    pub fn hparams(&self) -> &HParams {
        &self.decoder.hp
    }

    /// Bytes of tensor data in the file.
    pub fn size_bytes(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.n_bytes).sum()
    }

    /// Number of weights.
    pub fn n_params(&self) -> u64 {
        self.file.tensors().iter().map(|t| t.n_elements()).sum()
    }

    /// Renders `messages` through the chat template, ready to tokenize with
    /// `add_special = true`: a leading BOS text is dropped when the tokenizer adds BOS itself
    /// (as llama.cpp does, so no prompt starts with two BOS tokens).
    pub fn apply_chat(
        &self,
        messages: &[crate::chat::ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self
            .template
            .as_ref()
            .map_err(|e| LlmError::NoChatTemplate(e.clone()))?;
        let mut text = template
            .render(messages, add_generation_prompt)
            .map_err(|e| LlmError::ChatTemplate(e.to_string()))?;
        if self.tokenizer.add_bos()
            && let Some(bos) = self
                .tokenizer
                .bos()
                .and_then(|b| self.tokenizer.token_text(b))
            && !bos.is_empty()
            && text.starts_with(bos)
        {
            text.drain(..bos.len());
        }
        Ok(text)
    }

    /// The context size a session asked for `n_ctx` gets (0: the model's training context,
    /// at most 4096).
    pub fn resolve_n_ctx(&self, n_ctx: usize) -> usize {
        if n_ctx == 0 {
            self.hparams().n_ctx_train.min(4096)
        } else {
            n_ctx
        }
    }

    /// A fresh session with `n_ctx` cells (see [`Model::resolve_n_ctx`]); offloaded layers
    /// keep their K/V in GPU memory, which can fail.
    pub fn new_session(&self, n_ctx: usize, kv_type: KvType) -> Result<Session> {
        let n_ctx = self.resolve_n_ctx(n_ctx);
        Ok(Session {
            cache: self.decoder.new_cache(n_ctx, kv_type)?,
            cell_tokens: Vec::new(),
            cell_pos_after: Vec::new(),
        })
    }
}

/// One conversation's state: the KV cache and what each cell holds, so a later prompt that
/// starts the same way reuses the cached prefix instead of recomputing it.
pub struct Session {
    pub cache: KvCache,
    /// Token id of each cell (`None` for media embeddings).
    cell_tokens: Vec<Option<u32>>,
    /// Next free position after each cell (M-RoPE images advance positions by less than
    /// their token count).
    cell_pos_after: Vec<i32>,
}

impl Session {
    pub fn n_ctx(&self) -> usize {
        self.cache.n_ctx()
    }

    /// Cells in use.
    pub fn n_tokens(&self) -> usize {
        self.cell_tokens.len()
    }

    /// The position the next token gets.
    pub fn next_pos(&self) -> i32 {
        self.cell_pos_after.last().copied().unwrap_or(0)
    }

    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Keeps the first `n` cells.
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.cell_tokens.len());
        self.cache.truncate(n);
        self.cell_tokens.truncate(n);
        self.cell_pos_after.truncate(n);
    }

    /// Keeps the longest cached prefix of `tokens` (never all of it: the last prompt token
    /// is evaluated again to get fresh logits) and returns its length.
    pub fn reuse_prefix(&mut self, tokens: &[u32]) -> usize {
        let same = self
            .cell_tokens
            .iter()
            .zip(tokens)
            .take_while(|(c, t)| **c == Some(**t))
            .count();
        let keep = same.min(tokens.len().saturating_sub(1));
        self.truncate(keep);
        keep
    }

    /// Evaluates text tokens at the next positions; returns logits per `logits`.
    pub fn decode_tokens(
        &mut self,
        model: &Model,
        tokens: &[u32],
        logits: Logits,
    ) -> Result<Vec<f32>> {
        self.decode(model, StepInput::Tokens { tokens, logits })
    }

    /// Evaluates media embeddings (`[n, n_embd_inp]`) with explicit positions (relative to
    /// the next position; 1 or 4 components per row, as the model takes). The session's
    /// position then advances by `n_pos`.
    pub fn decode_embeddings(
        &mut self,
        model: &Model,
        embd: &[f32],
        rel_pos: &[i32],
        n_pos: usize,
        non_causal: bool,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        self.decode(
            model,
            StepInput::Embeddings {
                embd,
                rel_pos,
                n_pos,
                non_causal,
                logits,
            },
        )
    }

    /// Evaluates one step's input at the next positions.
    pub fn decode(&mut self, model: &Model, input: StepInput<'_>) -> Result<Vec<f32>> {
        let pos = self.positions(model, &input);
        let batch = input.batch(&pos);
        let out = model.decoder.decode(&mut self.cache, &batch)?;
        self.record(&input);
        Ok(out)
    }

    /// Absolute positions of `input`'s rows, in the layout [`Batch::pos`] takes.
    fn positions(&self, model: &Model, input: &StepInput<'_>) -> Vec<i32> {
        let start = self.next_pos();
        let comp = model.decoder.n_pos_comp();
        match *input {
            StepInput::Tokens { tokens, .. } => sequential_positions(start, tokens.len(), comp),
            StepInput::Embeddings { rel_pos, .. } => {
                let n = rel_pos.len() / comp.max(1);
                // The 4th M-RoPE component is not a position (llama.cpp leaves it 0).
                rel_pos
                    .iter()
                    .enumerate()
                    .map(|(i, &p)| {
                        if comp == 4 && i >= 3 * n {
                            p
                        } else {
                            start + p
                        }
                    })
                    .collect()
            }
        }
    }

    /// Notes what the cells just added hold.
    fn record(&mut self, input: &StepInput<'_>) {
        let start = self.next_pos();
        match *input {
            StepInput::Tokens { tokens, .. } => {
                for (i, &t) in tokens.iter().enumerate() {
                    self.cell_tokens.push(Some(t));
                    self.cell_pos_after.push(start + i as i32 + 1);
                }
            }
            StepInput::Embeddings { embd, n_pos, .. } => {
                let n = self.cache.len() - self.cell_tokens.len();
                let _ = embd;
                let after = start + n_pos as i32;
                for _ in 0..n {
                    self.cell_tokens.push(None);
                    self.cell_pos_after.push(after);
                }
            }
        }
    }
}

/// What one sequence evaluates in a step: text tokens, or media embeddings at positions
/// relative to the sequence's next position.
#[derive(Debug, Clone, Copy)]
pub enum StepInput<'a> {
    Tokens {
        tokens: &'a [u32],
        logits: Logits,
    },
    Embeddings {
        /// `[n, n_embd_inp]`.
        embd: &'a [f32],
        /// 1 or 4 components per row, as the model takes.
        rel_pos: &'a [i32],
        /// How far the sequence's position advances.
        n_pos: usize,
        non_causal: bool,
        logits: Logits,
    },
}

impl<'a> StepInput<'a> {
    fn batch(&self, pos: &'a [i32]) -> Batch<'a> {
        match *self {
            StepInput::Tokens { tokens, logits } => Batch {
                input: BatchInput::Tokens(tokens),
                pos,
                non_causal: false,
                logits,
            },
            StepInput::Embeddings {
                embd,
                non_causal,
                logits,
                ..
            } => Batch {
                input: BatchInput::Embeddings(embd),
                pos,
                non_causal,
                logits,
            },
        }
    }
}

impl Model {
    /// One step for several sessions at once (continuous batching): their rows share each
    /// weight read, each session attends only to its own cache. Returns each session's
    /// logits, bit-identical to evaluating its input alone (the kernels are
    /// batch-invariant). On error no session keeps cells of this step.
    pub fn decode_many(
        &self,
        steps: &mut [(&mut Session, StepInput<'_>)],
    ) -> Result<Vec<Vec<f32>>> {
        let positions: Vec<Vec<i32>> = steps
            .iter()
            .map(|(s, input)| s.positions(self, input))
            .collect();
        let out = {
            let mut seqs: Vec<SeqBatch> = steps
                .iter_mut()
                .zip(&positions)
                .map(|((s, input), pos)| SeqBatch {
                    batch: input.batch(pos),
                    cache: &mut s.cache,
                })
                .collect();
            self.decoder.decode_many(&mut seqs)?
        };
        for (s, input) in steps.iter_mut() {
            s.record(input);
        }
        Ok(out)
    }
}
