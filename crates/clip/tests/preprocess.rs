//! Golden test: our preprocessed pixels against llama.cpp's `inp_raw` (`pixels.<image>` in each vision
//! fixture's reference.safetensors), with the constants read from the fixture's mmproj.gguf.

use clip::ClipModel;
use clip::bitmap::Bitmap;
use clip::preprocess::{PreprocessedImage, TokenGrid};
use testkit::{RefTensors, fixture};

const PNG_TOLERANCE: f32 = 1e-5;

/// The mmproj, whose projector descriptor picks the preprocessing and fills in its defaults.
fn model(arch: &str) -> ClipModel {
    ClipModel::load(fixture(arch).join("mmproj.gguf")).unwrap()
}

fn reference_pixels(arch: &str, image: &str) -> (Vec<usize>, Vec<f32>) {
    let tensors = RefTensors::load(&fixture(arch).join("reference.safetensors"));
    let (shape, values) = tensors.get(&format!("pixels.{image}"));
    (shape.to_vec(), values.to_vec())
}

fn preprocess(arch: &str, image: &str) -> PreprocessedImage {
    let bitmap = Bitmap::from_file(fixture(arch).join(image)).unwrap();
    let model = model(arch);
    model
        .preprocess(&bitmap, &model.preprocess_params(None, None))
        .unwrap()
}

/// Compares with the reference; returns the max abs error after checking the shape.
fn max_error(arch: &str, image: &str) -> f32 {
    let ours = preprocess(arch, image);
    let (shape, reference) = reference_pixels(arch, image);
    assert_eq!(
        shape,
        vec![1, 3, ours.height as usize, ours.width as usize],
        "{arch}/{image}: shape"
    );
    let err = ours
        .data
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    // One 8-bit level is 1/255/std; report errors in levels too, which is what decoders disagree by.
    let level = 1.0 / 255.0 / model(arch).hparams().image_std[0];
    let off = ours
        .data
        .iter()
        .zip(&reference)
        .filter(|(a, b)| (*a - *b).abs() > PNG_TOLERANCE)
        .count();
    println!(
        "{arch}/{image}: {}x{} max_abs {err:.3e} ({:.2} levels), {off} of {} values off",
        ours.width,
        ours.height,
        err / level,
        reference.len()
    );
    err
}

const ARCHS: [&str; 4] = ["gemma3", "qwen2vl", "qwen25vl", "qwen3vl"];

#[test]
fn png_pixels_match_llama_cpp() {
    for arch in ARCHS {
        for image in ["photo.png", "tiny.png"] {
            let err = max_error(arch, image);
            assert!(err <= PNG_TOLERANCE, "{arch}/{image}: max abs error {err}");
        }
    }
}

#[test]
fn jpeg_pixels_close_to_llama_cpp() {
    // Baseline JPEGs go through our stb_image-exact decoder, so they match like PNGs do.
    for arch in ARCHS {
        let err = max_error(arch, "photo2.jpg");
        assert!(
            err <= PNG_TOLERANCE,
            "{arch}/photo2.jpg: max abs error {err}"
        );
    }
}

#[test]
fn token_grids_match_the_reference_chunks() {
    let expect = [
        ("qwen2vl", "photo.png", 12, 9),
        ("qwen2vl", "photo2.jpg", 9, 6),
        ("qwen2vl", "tiny.png", 3, 3),
        ("qwen25vl", "photo.png", 12, 9),
        ("qwen3vl", "photo.png", 10, 8),
        ("qwen3vl", "photo2.jpg", 8, 6),
        ("qwen3vl", "tiny.png", 3, 3),
        // Gemma 3: the fixture's 4x4 pooled grid, reported as one row.
        ("gemma3", "photo.png", 16, 1),
    ];
    for (arch, image, nx, ny) in expect {
        assert_eq!(
            preprocess(arch, image).token_grid,
            TokenGrid { nx, ny },
            "{arch}/{image}"
        );
    }
}
