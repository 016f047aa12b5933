//! clip: mmproj (vision encoder + projector) loading and image encoding, the Rust side of
//! llama.cpp's `clip.cpp`.
//!
//! [`ClipModel::load`] reads the `clip.*` metadata and llama.cpp-named tensors of an mmproj
//! GGUF; [`ClipModel::encode`] turns preprocessed planar pixels into the embedding rows the
//! text model consumes. The projector type picks the encoder through [`registry`].

mod error;
pub mod hparams;
pub mod models;
pub mod registry;
pub mod vit;

pub use error::ClipError;
pub use hparams::VisionHparams;
pub use models::{ClipModel, Embeddings, Encoder};
pub mod bitmap;
pub mod jpeg;
pub mod preprocess;
