//! Errors of mmproj loading and image encoding.

use std::path::PathBuf;

/// What went wrong while loading an mmproj file or encoding an image.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("cannot open mmproj {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: gguf::GgufError,
    },
    #[error("mmproj metadata: {0}")]
    Metadata(#[from] gguf::GgufError),
    #[error("mmproj metadata key {key}: {detail}")]
    BadValue { key: String, detail: String },
    #[error("mmproj has no vision encoder (clip.has_vision_encoder is false)")]
    NoVisionEncoder,
    #[error("unsupported projector type {found:?} (supported: {supported})")]
    UnsupportedProjector { found: String, supported: String },
    #[error("mmproj tensor {name} is missing")]
    MissingTensor { name: String },
    #[error("mmproj tensor {name} has shape {actual:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        actual: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("preprocessing: {0}")]
    Preprocess(#[from] crate::preprocess::PreprocessError),
    #[error("projector {projector} takes {takes}, not {given}")]
    WrongMedia {
        projector: &'static str,
        takes: &'static str,
        given: &'static str,
    },
    #[error("image input: {0}")]
    BadImage(String),
    #[error("tensor op: {0}")]
    Tensor(#[from] tensor::TensorError),
}
