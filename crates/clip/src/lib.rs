//! clip: mmproj (media encoder + projector) loading and encoding, the Rust side of llama.cpp's
//! `clip.cpp`.
//!
//! [`ClipModel::load`] reads the `clip.*` metadata and llama.cpp-named tensors of an mmproj
//! GGUF and picks the projector's [`Projector`] descriptor from the [`registry`]: how its
//! media are preprocessed and framed, its defaults, and its encoder. [`ClipModel::preprocess`]
//! turns a [`Bitmap`] into the encoder's input and [`ClipModel::encode_image`] into the
//! embedding rows the text model consumes.

pub mod bitmap;
mod error;
pub mod hparams;
pub mod jpeg;
mod model;
pub mod models;
pub mod preprocess;
pub mod projector;
pub mod registry;
pub mod tower;
pub mod vit;

pub use bitmap::{Bitmap, BitmapError};
pub use error::ClipError;
pub use hparams::EncoderHparams;
pub use model::ClipModel;
pub use models::{Embeddings, EncodeInput, Encoder};
pub use preprocess::{ImagePiece, Placement};
pub use projector::{Defaults, Framing, Input, Modality, Projector, TileFraming, TokenLimits};
