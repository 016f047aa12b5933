//! Shared by the golden test binaries: where the text model runs.
#![allow(dead_code)]

use std::sync::Arc;

use llm::Model;

/// Where the text model runs: the CPU, or the GPU with `Some(n)` of its layers (`None`:
/// all and the output head).
#[derive(Clone, Copy)]
pub enum Place {
    Cpu,
    Gpu(Option<usize>),
}

pub fn load_model(path: std::path::PathBuf, place: Place) -> Option<Arc<Model>> {
    let mut model = Model::load(path).expect("model loads");
    if let Place::Gpu(layers) = place {
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

