//! THE table from `clip.projector_type` to the encoder that implements it.

use crate::ClipError;
use crate::hparams::VisionHparams;
use crate::models::{Encoder, gemma3, qwen2vl, qwen3vl};
use crate::vit::WeightLoader;

/// Builds an encoder from the weights and hyper-parameters of an mmproj file.
pub type Constructor = fn(&WeightLoader, &VisionHparams) -> Result<Box<dyn Encoder>, ClipError>;

/// Supported projector types, as llama.cpp writes them into `clip.projector_type`.
pub const PROJECTORS: &[(&str, Constructor)] = &[
    ("gemma3", gemma3::build),
    ("qwen2vl_merger", qwen2vl::build),
    ("qwen2.5vl_merger", qwen2vl::build),
    ("qwen3vl_merger", qwen3vl::build),
];

/// The constructor for `projector_type`, or an error naming it and the supported list.
pub fn lookup(projector_type: &str) -> Result<Constructor, ClipError> {
    PROJECTORS
        .iter()
        .find(|(name, _)| *name == projector_type)
        .map(|&(_, c)| c)
        .ok_or_else(|| ClipError::UnsupportedProjector {
            found: projector_type.to_owned(),
            supported: PROJECTORS
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
