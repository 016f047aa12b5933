/// What can be wrong with a GGUF file's `tokenizer.ggml.*` metadata.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer metadata lacks key '{0}'")]
    MissingKey(&'static str),
    #[error("tokenizer key '{key}' has the wrong type: expected {expected}, found {found}")]
    KeyType {
        key: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("unsupported tokenizer model '{0}' (supported: llama, gpt2)")]
    UnsupportedModel(String),
    #[error("unsupported pre-tokenizer '{0}' for a byte-level BPE vocabulary")]
    UnsupportedPreTokenizer(String),
    #[error("tokenizer key '{key}' has {found} entries, but the vocabulary has {n_tokens} tokens")]
    ArrayTooShort {
        key: &'static str,
        found: usize,
        n_tokens: usize,
    },
    #[error("vocabulary has {0} tokens; token ids must fit in 31 bits")]
    TooManyTokens(usize),
    #[error("duplicate token in vocabulary: {text:?} has ids {first} and {second}")]
    DuplicateToken {
        text: String,
        first: u32,
        second: u32,
    },
    #[error("{flag} is true, but {id_key} is not set (or out of range)")]
    MissingSpecialToken {
        flag: &'static str,
        id_key: &'static str,
    },
    #[error("pre-tokenizer regex {pattern:?} does not compile: {detail}")]
    BadRegex { pattern: String, detail: String },
}
