//! Our stb_image-exact JPEG decoder: golden comparison through preprocessing against llama.cpp's
//! pixels, plus robustness on corrupt input.

use clip::ClipModel;
use clip::bitmap::Bitmap;
use clip::jpeg;
use testkit::{RefTensors, fixture};

fn photo2() -> Vec<u8> {
    std::fs::read(fixture("qwen2vl").join("photo2.jpg")).unwrap()
}

/// Max abs error of our preprocessed photo2.jpg (decoded by `jpeg::decode`) against llama.cpp.
fn max_error(arch: &str) -> f32 {
    let image = jpeg::decode(&std::fs::read(fixture(arch).join("photo2.jpg")).unwrap()).unwrap();
    let bitmap = Bitmap::from_rgb(image.width as u32, image.height as u32, image.rgb).unwrap();
    let model = ClipModel::load(fixture(arch).join("mmproj.gguf")).unwrap();
    let ours = model
        .preprocess(&bitmap, &model.preprocess_params(None, None))
        .unwrap();
    let reference =
        RefTensors::load(&fixture(arch).join("reference.safetensors")).f32s("pixels.photo2.jpg");
    assert_eq!(reference.len(), ours.data.len(), "{arch}: size");
    let err = ours
        .data
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!("{arch}: max abs error {err:.3e}");
    err
}

#[test]
fn photo2_pixels_match_llama_cpp() {
    let errors: Vec<f32> = ["gemma3", "qwen2vl", "qwen25vl", "qwen3vl"]
        .iter()
        .map(|arch| max_error(arch))
        .collect();
    println!("errors {errors:?}");
    assert!(errors.iter().all(|&e| e <= 1e-5), "{errors:?}");
}

#[test]
fn truncated_and_corrupt_inputs_return_errors() {
    let data = photo2();
    for len in (0..data.len()).step_by(97) {
        let _ = jpeg::decode(&data[..len]);
    }
    let mut flipped = data.clone();
    for i in (2..flipped.len()).step_by(53) {
        flipped[i] ^= 0x5A;
        let _ = jpeg::decode(&flipped);
        flipped[i] ^= 0x5A;
    }
    // Pseudo-random multi-byte damage in the headers and the entropy-coded data.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..300 {
        let mut damaged = data.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state as usize) % damaged.len();
            damaged[at] = (state >> 32) as u8;
        }
        let _ = jpeg::decode(&damaged);
    }
    assert!(jpeg::decode(b"not a jpeg").is_err());
    assert!(jpeg::decode(&[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
}
