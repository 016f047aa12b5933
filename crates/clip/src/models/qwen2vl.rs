//! Qwen2-VL / Qwen2.5-VL (placeholder while gemma3 is brought up).
use crate::ClipError;
use crate::hparams::VisionHparams;
use crate::models::Encoder;
use crate::vit::WeightLoader;

pub fn build(_wl: &WeightLoader, hp: &VisionHparams) -> Result<Box<dyn Encoder>, ClipError> {
    Err(ClipError::UnsupportedProjector {
        found: hp.projector_type.clone(),
        supported: "not yet".into(),
    })
}
