/// Everything loading or running a text model can refuse.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(transparent)]
    Tensor(#[from] tensor::TensorError),
    #[error("unsupported model architecture '{0}' (supported: {1})")]
    UnknownArchitecture(String, &'static str),
    #[error("model file lacks tensor '{0}'")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("bad hyper-parameter {key}: {detail}")]
    BadParam { key: String, detail: String },
    /// The model has no chat template this library can use (the GGUF's failed to parse and
    /// no built-in format matches).
    #[error("the model has no usable chat template: {0}")]
    NoChatTemplate(String),
    /// The template refused these messages (roles out of order, ...): the caller's input.
    #[error("{0}")]
    ChatTemplate(String),
    #[error(
        "context is full: {needed} positions needed, context size is {n_ctx} (use a larger -c)"
    )]
    ContextFull { needed: usize, n_ctx: usize },
    #[error(
        "the shared KV cache pool is full: {needed} more cells needed, {free} of {capacity} free"
    )]
    KvPoolFull {
        needed: usize,
        free: usize,
        capacity: usize,
    },
    #[error("token id {id} is outside the vocabulary (size {n_vocab})")]
    BadToken { id: u32, n_vocab: usize },
    #[error("batch is malformed: {0}")]
    BadBatch(String),
    #[error("embedding batch has rows of {got} values, the model takes {expected}")]
    EmbeddingWidth { expected: usize, got: usize },
}

pub type Result<T, E = LlmError> = std::result::Result<T, E>;
