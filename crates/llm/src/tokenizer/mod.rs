//! Tokenizers built from GGUF metadata, matching llama.cpp (commit 0c1e570) token for token:
//! SentencePiece-style `llama` vocabularies (Gemma 3) and byte-level BPE `gpt2` vocabularies
//! (Qwen, Mistral/Tekken, Pixtral, SmolLM, ...).
//!
//! `tokenize` follows `llama_tokenize`: special-token texts are split out first, then every
//! text fragment is tokenized on its own; BOS/EOS are added per `add_special` and the
//! metadata. `detokenize` follows `llama_detokenize`.

mod bpe;
mod decode;
mod error;
mod fxhash;
mod metadata;
mod pretokenize;
mod special;
mod spm;
#[cfg(test)]
mod tests;
mod vocab;

use gguf::{GgufFile, Value};

pub use decode::StreamDecoder;
pub use error::TokenizerError;
pub use vocab::{SpecialIds, VocabKind, attr};

use bpe::BpeScratch;
use decode::PieceTable;
use metadata::Metadata;
use special::{Fragment, SpecialIndex};
use vocab::Vocab;

/// A tokenizer for one model's vocabulary. Cheap to share (`&Tokenizer` is `Sync`).
pub struct Tokenizer {
    vocab: Vocab,
    specials: SpecialIndex,
    pieces: PieceTable,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.vocab.kind)
            .field("pre", &self.vocab.pre_name)
            .field("n_vocab", &self.vocab.n_tokens())
            .field("special", &self.vocab.special)
            .field("add_bos", &self.vocab.add_bos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Reads `tokenizer.ggml.*` from a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        Self::from_metadata(|key| file.get(key))
    }

    /// Builds the tokenizer from any metadata lookup (key -> GGUF value).
    pub fn from_metadata<'a>(
        get: impl Fn(&str) -> Option<&'a Value>,
    ) -> Result<Tokenizer, TokenizerError> {
        let vocab = Vocab::load(&Metadata::new(get))?;
        let specials = SpecialIndex::build(&vocab);
        let pieces = PieceTable::build(&vocab);
        Ok(Tokenizer {
            vocab,
            specials,
            pieces,
        })
    }

    /// `llama_tokenize(text, add_special, parse_special)`.
    ///
    /// `add_special` adds BOS (and EOS) where the model's metadata asks for them;
    /// `parse_special` recognises control-token texts such as `<start_of_turn>`
    /// (user-defined tokens are always recognised).
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<u32> {
        let v = &self.vocab;
        let fragments = if text.is_empty() {
            Vec::new()
        } else {
            special::partition(v, &self.specials, text, parse_special)
        };

        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && v.add_bos {
            out.extend(v.special.bos);
        }
        match v.kind {
            VocabKind::Spm => self.tokenize_spm(text, &fragments, &mut out),
            VocabKind::Bpe => self.tokenize_bpe(text, &fragments, &mut out),
        }
        if add_special && v.add_eos {
            out.extend(v.special.eos);
        }
        out
    }

    fn tokenize_spm(&self, text: &str, fragments: &[Fragment], out: &mut Vec<u32>) {
        // A space is put in front of the text and of every fragment that follows a special
        // token (when the vocabulary asks for a space prefix).
        let mut prev_special = true;
        let mut buf = String::new();
        for fragment in fragments {
            match *fragment {
                Fragment::Text { start, end } => {
                    buf.clear();
                    if self.vocab.add_space_prefix && prev_special {
                        buf.push('\u{2581}');
                    }
                    for c in text[start..end].chars() {
                        buf.push(if c == ' ' { '\u{2581}' } else { c });
                    }
                    spm::tokenize(&self.vocab, &buf, out);
                    prev_special = false;
                }
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
            }
        }
    }

    fn tokenize_bpe(&self, text: &str, fragments: &[Fragment], out: &mut Vec<u32>) {
        let Some(pre) = &self.vocab.pre else {
            return;
        };
        let mut scratch = BpeScratch::default();
        let mut word = String::new();
        for fragment in fragments {
            match *fragment {
                Fragment::Text { start, end } => {
                    let piece = &text[start..end];
                    for (s, e) in pre.split(piece) {
                        self.vocab
                            .byte_map
                            .encode(&piece.as_bytes()[s..e], &mut word);
                        bpe::tokenize_word(&self.vocab, &word, &mut scratch, out);
                    }
                }
                Fragment::Token(id) => out.push(id),
            }
        }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        self.vocab.n_tokens()
    }

    pub fn kind(&self) -> VocabKind {
        self.vocab.kind
    }

    /// `tokenizer.ggml.pre` ("" when absent).
    pub fn pre_tokenizer(&self) -> &str {
        &self.vocab.pre_name
    }

    pub fn special_ids(&self) -> &SpecialIds {
        &self.vocab.special
    }

    pub fn bos(&self) -> Option<u32> {
        self.vocab.special.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.vocab.special.eos
    }

    pub fn eot(&self) -> Option<u32> {
        self.vocab.special.eot
    }

    /// Whether `tokenize(.., add_special = true, ..)` puts BOS in front.
    pub fn add_bos(&self) -> bool {
        self.vocab.add_bos
    }

    pub fn add_eos(&self) -> bool {
        self.vocab.add_eos
    }

    /// `tokenizer.ggml.add_sep_token` (used by embedding models; `tokenize` ignores it, as
    /// llama.cpp does for these vocabulary types).
    pub fn add_sep(&self) -> bool {
        self.vocab.add_sep
    }

    /// `tokenizer.ggml.remove_extra_whitespaces` (read for completeness; llama.cpp applies it
    /// only to Unigram vocabularies).
    pub fn remove_extra_whitespaces(&self) -> bool {
        self.vocab.remove_extra_whitespaces
    }

    /// End-of-generation token (EOS, EOT, EOM, `<|im_end|>`, `<end_of_turn>`, ... as llama.cpp
    /// collects them).
    pub fn is_eog(&self, id: u32) -> bool {
        self.vocab.eog.binary_search(&id).is_ok()
    }

    /// All end-of-generation ids, sorted.
    pub fn eog_ids(&self) -> &[u32] {
        &self.vocab.eog
    }

    pub fn is_control(&self, id: u32) -> bool {
        self.vocab.attr(id) & attr::CONTROL != 0
    }

    /// The id of the token whose text is exactly `text` (e.g. `"<start_of_image>"`).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id_of(text)
    }

    /// The stored text of a token (`▁` / GPT-2 byte characters as in the vocabulary).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.vocab.tokens.get(id as usize).map(|t| &*t.text)
    }

    /// The attribute bits of a token ([`attr`]); `attr::UNDEFINED` outside the vocabulary.
    pub fn token_attr(&self, id: u32) -> u16 {
        self.vocab.attr(id)
    }

    pub fn token_score(&self, id: u32) -> Option<f32> {
        self.vocab.tokens.get(id as usize).map(|t| t.score)
    }
}
