//! Image encode time per fixture architecture (tiny random models: measures the per-image
//! overhead of the pipeline; real-model numbers need real mmproj files).

use std::path::Path;

use clip::ClipModel;
use criterion::{Criterion, criterion_group, criterion_main};

fn bench_encode(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    for (arch, image) in [
        ("gemma3", "photo.png"),
        ("qwen2vl", "photo.png"),
        ("qwen25vl", "photo.png"),
        ("qwen3vl", "photo.png"),
    ] {
        let dir = root.join(arch);
        let model = ClipModel::load(dir.join("mmproj.gguf")).expect("load mmproj");
        let refs = tensor::safetensors::read(dir.join("reference.safetensors")).expect("refs");
        let t = &refs[&format!("pixels.{image}")];
        let (h, w) = (t.shape[2], t.shape[3]);
        let pixels = t.to_f32().expect("f32 pixels");
        c.bench_function(&format!("encode/{arch}/{w}x{h}"), |b| {
            b.iter(|| model.encode(&pixels, w, h).expect("encode"))
        });
    }
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
