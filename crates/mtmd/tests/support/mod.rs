//! Shared by the golden test binaries: where the text model runs.
#![allow(dead_code)]

use std::sync::Arc;

use llm::Model;

/// Where the model runs: the CPU, or the GPU (the media encoder's blocks, and `Some(n)` of
/// the text model's layers — `None`: all and the output head).
#[derive(Clone, Copy)]
pub enum Place {
    Cpu,
    Gpu(Option<usize>),
    /// Only the text model on the GPU (lavapipe needs ~5 s per 1500-frame audio window even
    /// with the tiled attention kernel, so one audio family runs its encoder there, not all).
    GpuText(Option<usize>),
}

pub fn load_model(path: std::path::PathBuf, place: Place) -> Option<Arc<Model>> {
    let mut model = Model::load(path).expect("model loads");
    if let Place::Gpu(layers) | Place::GpuText(layers) = place {
        let device = match llm::Device::gpu() {
            Ok(d) => d,
            Err(e) => {
                testkit::skip_without_gpu(&e.to_string());
                return None;
            }
        };
        model.place(&device, layers).expect("model on the GPU");
        println!("model on {}", model.device_summary());
    }
    Some(Arc::new(model))
}

/// Context parameters that put the media encoder where `place` says.
pub fn params(place: Place) -> mtmd::ContextParams {
    let device = match place {
        Place::Cpu | Place::GpuText(_) => llm::Device::Cpu,
        Place::Gpu(_) => llm::Device::gpu().expect("a GPU (load_model checked)"),
    };
    mtmd::ContextParams {
        device,
        ..mtmd::ContextParams::default()
    }
}
