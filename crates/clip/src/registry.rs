//! THE table of projector types: one row per [`Projector`] descriptor, each defined in its own
//! file under `models/`. Adding a projector is that file plus one row here.

use crate::ClipError;
use crate::models::{gemma3, idefics3, pixtral, qwen2vl, qwen3vl, whisper};
use crate::projector::Projector;

/// Every supported projector.
pub const PROJECTORS: &[&Projector] = &[
    &gemma3::PROJECTOR,
    &qwen2vl::QWEN2VL,
    &qwen2vl::QWEN25VL,
    &qwen3vl::PROJECTOR,
    &pixtral::PROJECTOR,
    &idefics3::PROJECTOR,
    &whisper::QWEN2A,
    &whisper::VOXTRAL,
];

/// The descriptor of `projector_type`, or an error naming it and the supported list.
pub fn lookup(projector_type: &str) -> Result<&'static Projector, ClipError> {
    PROJECTORS
        .iter()
        .copied()
        .find(|p| p.name == projector_type)
        .ok_or_else(|| ClipError::UnsupportedProjector {
            found: projector_type.to_owned(),
            supported: PROJECTORS
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, p) in PROJECTORS.iter().enumerate() {
            assert!(
                PROJECTORS[..i].iter().all(|q| q.name != p.name),
                "{}",
                p.name
            );
            assert_eq!(lookup(p.name).unwrap().name, p.name);
        }
        let err = lookup("mlp").unwrap_err().to_string();
        assert!(err.contains("mlp") && err.contains("gemma3"), "{err}");
    }
}
