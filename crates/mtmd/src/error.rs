//! Everything the multimodal library can refuse, with the input it was about.

/// Errors of tokenizing prompts with media and evaluating the chunks.
#[derive(Debug, thiserror::Error)]
pub enum MtmdError {
    #[error(
        "prompt has {markers} media marker(s) '{marker}' but {bitmaps} media item(s) were given"
    )]
    MarkerCount {
        marker: String,
        markers: usize,
        bitmaps: usize,
    },
    #[error("the media marker must not be empty")]
    EmptyMarker,
    #[error("'{id}' is {kind}, but this model's encoder only takes {supported}")]
    UnsupportedMedia {
        id: String,
        kind: &'static str,
        supported: &'static str,
    },
    #[error(
        "encoder gave an image grid of {nx}x{ny} for {n_tokens} tokens (the grid must hold exactly the tokens)"
    )]
    BadGrid {
        nx: usize,
        ny: usize,
        n_tokens: usize,
    },
    #[error("the encoder cut '{id}' into tiles but its framing has no tile texts")]
    UnframedTiles { id: String },
    #[error("embeddings of '{id}' have {got} values, expected {n_tokens} tokens x {n_embd}")]
    EmbeddingSize {
        id: String,
        n_tokens: usize,
        n_embd: usize,
        got: usize,
    },
    #[error(
        "encoder produces rows of {encoder} values but the text model takes {model} (wrong mmproj for this model?)"
    )]
    EmbeddingWidth { encoder: usize, model: usize },
    #[error("encoding '{id}' failed: {source}")]
    Encoder {
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Llm(#[from] llm::LlmError),
}

pub type Result<T, E = MtmdError> = std::result::Result<T, E>;
