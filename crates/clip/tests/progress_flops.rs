//! The per-block progress callback of the encoders and their FLOP estimate, on fixtures.

use std::sync::Mutex;

use clip::ClipModel;
use testkit::{RefTensors, fixture};

fn load(arch: &str) -> ClipModel {
    ClipModel::load(fixture(arch).join("mmproj.gguf")).expect("load mmproj")
}

/// The reference pixels of the first image chunk of `arch`'s fixture: (pixels, width, height).
fn first_pixels(arch: &str) -> (Vec<f32>, usize, usize) {
    let dir = fixture(arch);
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let json = testkit::reference_json(&dir);
    for c in json["cases"].as_object().unwrap().values() {
        for chunk in c["chunks"].as_array().unwrap() {
            if chunk["type"] == "image" {
                let (shape, pixels) = refs.get(chunk["pixels_tensor"].as_str().unwrap());
                return (pixels.to_vec(), shape[3], shape[2]);
            }
        }
    }
    panic!("{arch}: no image chunk");
}

fn calls_of(model: &ClipModel, input: &[f32], w: usize, h: usize) -> Vec<(usize, usize)> {
    let calls = Mutex::new(Vec::new());
    let plain = model.encode(input, w, h).expect("encode");
    let with = model
        .encode_with_progress(input, w, h, &|done, total| {
            calls.lock().unwrap().push((done, total))
        })
        .expect("encode with progress");
    assert_eq!(plain, with, "progress must not change the result");
    calls.into_inner().unwrap()
}

#[test]
fn progress_once_per_block_in_order() {
    // Qwen3-VL runs its tower in segments (deepstack taps), Whisper is the audio tower.
    for arch in ["gemma3", "qwen25vl", "qwen3vl"] {
        let model = load(arch);
        let (pixels, w, h) = first_pixels(arch);
        let n_layer = model.hparams().n_layer;
        let want: Vec<_> = (1..=n_layer).map(|i| (i, n_layer)).collect();
        assert_eq!(calls_of(&model, &pixels, w, h), want, "{arch}");
    }
    let model = load("qwen2audio");
    let n_mel = model.hparams().n_mel_bins;
    let n_frames = 200;
    let mel: Vec<f32> = (0..n_mel * n_frames)
        .map(|i| (i % 17) as f32 / 17.0)
        .collect();
    let n_layer = model.hparams().n_layer;
    let want: Vec<_> = (1..=n_layer).map(|i| (i, n_layer)).collect();
    assert_eq!(calls_of(&model, &mel, n_frames, n_mel), want, "qwen2audio");
}

#[test]
fn flops_match_a_hand_count_qwen25vl() {
    // tiny-random-qwen25vl: n_embd 64, n_ff 128, 4 blocks (q, k, v, out 64x64; gate, up,
    // down 64x128), two 14x14x3x64 patch embeddings, merger 256x256 then 256x128, windows of
    // (112 / 14)² = 64 patches on layers 0 and 2 (n_wa_pattern 2).
    let model = load("qwen25vl");
    let block = 4 * 64 * 64 + 3 * 64 * 128;
    let stem = 2 * 14 * 14 * 3 * 64;
    let merger = 256 * 256 + 256 * 128;
    // 56x56: 16 patches, 4 output rows; every window holds the whole image.
    let n = 16u64;
    let want = 2 * n * stem + 2 * n * 4 * block + 4 * (4 * n * n * 64) + 2 * 4 * merger;
    assert_eq!(model.encode_flops(56, 56, 4), want);
    assert_eq!(want, 8_699_904);
    // 224x224: 256 patches; windowed layers attend over 64 of them.
    let n = 256u64;
    let attn = 2 * (4 * n * 64 * 64) + 2 * (4 * n * n * 64);
    let want = 2 * n * stem + 2 * n * 4 * block + attn + 2 * 64 * merger;
    assert_eq!(model.encode_flops(224, 224, 64), want);
}

#[test]
fn flops_match_a_hand_count_qwen2audio() {
    // tiny qwen2a: conv 3x128->64 (stride 1) and 3x64->64 (stride 2), 3 blocks of n_embd 64
    // (q, k, v, out 64x64; up, down 64x128), fc 64x64. 3000 frames -> 1500 tokens -> 750 rows.
    let model = load("qwen2audio");
    let stem = 2 * (3000 * 3 * 128 * 64 + 1500 * 3 * 64 * 64);
    let blocks = 2 * 1500 * 3 * (4 * 64 * 64 + 2 * 64 * 128);
    let attn = 3 * 4 * 1500 * 1500 * 64;
    let fc = 2 * 750 * 64 * 64;
    assert_eq!(
        model.encode_flops(3000, 128, 750),
        stem + blocks + attn + fc
    );
}
