//! Encoders placed on a GPU: the whole encode (patch embedding or conv stem, tower, merger /
//! pooling, projector) stays on the device and reads back exactly one buffer, its embeddings.
//! Vision fixtures' reference pixels give llama.cpp's embeddings within the CPU's bound; audio
//! windows give the CPU's embeddings; batched encodes on the device match each input alone.

use clip::ClipModel;
use clip::models::EncodeInput;
use testkit::{RefTensors, fixture};

/// The device (and its read-back counter) is shared by the tests of this file: one at a time.
static DEVICE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gpu_model(arch: &str) -> Option<(ClipModel, std::sync::Arc<tensor::gpu::GpuContext>)> {
    let device = match tensor::Device::gpu() {
        Ok(d) => d,
        Err(e) => {
            testkit::skip_without_gpu(&e.to_string());
            return None;
        }
    };
    let tensor::Device::Gpu(ctx) = &device else {
        testkit::skip_without_gpu("not a GPU device");
        return None;
    };
    let ctx = ctx.clone();
    let mut model = ClipModel::load(fixture(arch).join("mmproj.gguf")).expect("load mmproj");
    model.place(&device).expect("encoder on the GPU");
    assert!(model.on_gpu());
    Some((model, ctx))
}

fn max_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len());
    let err = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    (err, want.iter().map(|v| v.abs()).fold(0f32, f32::max))
}

/// One image chunk of a fixture case: (name, pixels, width, height, reference embeddings).
type ImageCase = (String, Vec<f32>, usize, usize, Vec<f32>);

/// The image chunks of `arch`'s cases.
fn image_cases(arch: &str) -> Vec<ImageCase> {
    let dir = fixture(arch);
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for (case, c) in json["cases"].as_object().unwrap() {
        for chunk in c["chunks"].as_array().unwrap() {
            if chunk["type"] != "image" {
                continue;
            }
            // Older fixtures name the encoder's input `pixels_tensor`, newer ones
            // `encoder_input_tensor`.
            let input = chunk["pixels_tensor"]
                .as_str()
                .or(chunk["encoder_input_tensor"].as_str())
                .unwrap();
            let (shape, pixels) = refs.get(input);
            let (h, w) = (shape[shape.len() - 2], shape[shape.len() - 1]);
            let (_, want) = refs.get(chunk["embd_tensor"].as_str().unwrap());
            out.push((
                format!("{arch}/{case}"),
                pixels.to_vec(),
                w,
                h,
                want.to_vec(),
            ));
        }
    }
    out
}

/// Every vision family: stem, tower and projector on the device, the embeddings its only
/// read-back, within the CPU path's bound against llama.cpp.
#[test]
fn vision_encoders_run_whole_on_the_gpu_with_one_read_back() {
    let _one = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    for arch in [
        "gemma3", "qwen2vl", "qwen25vl", "qwen3vl", "pixtral", "mistral3", "idefics3",
    ] {
        let Some((model, ctx)) = gpu_model(arch) else {
            return;
        };
        for (name, pixels, w, h, want) in image_cases(arch) {
            let before = ctx.downloads();
            let (dispatches, _) = ctx.work_counts();
            let got = model.encode(&pixels, w, h).expect("encode");
            assert_eq!(ctx.downloads() - before, 1, "{name}: buffers read back");
            let dispatches = ctx.work_counts().0 - dispatches;
            let (err, scale) = max_err(&got.data, &want);
            println!(
                "{name}: gpu embd max_abs {err:.3e} rel {:.2e}, {dispatches} dispatches for {} blocks",
                err / scale,
                model.hparams().n_layer
            );
            assert!(err <= 3e-3 * scale, "{name}: embeddings");
        }
    }
}

/// Same-size inputs (Gemma 3 images, SmolVLM tiles) go through the tower in one pass on the
/// device; each result matches that input encoded alone.
#[test]
fn batched_gpu_encode_matches_each_image_alone() {
    let _one = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    for arch in ["gemma3", "idefics3"] {
        let Some((model, _ctx)) = gpu_model(arch) else {
            return;
        };
        let cases = image_cases(arch);
        let inputs: Vec<EncodeInput<'_>> = cases
            .iter()
            .map(|(_, pixels, w, h, _)| EncodeInput {
                data: pixels,
                width: *w,
                height: *h,
            })
            .collect();
        let batched = model
            .encoder()
            .encode_batch(&inputs, &|_, _| {})
            .expect("batched encode");
        assert_eq!(batched.len(), cases.len());
        let mut worst = 0f32;
        for ((name, pixels, w, h, _), got) in cases.iter().zip(&batched) {
            let alone = model.encode(pixels, *w, *h).expect("encode");
            let (err, scale) = max_err(&got.data, &alone.data);
            worst = worst.max(err / scale);
            assert!(err <= 1e-5 * scale, "{name}: batched");
            assert_eq!(
                (got.n_tokens, got.nx, got.ny),
                (alone.n_tokens, alone.nx, alone.ny)
            );
        }
        println!(
            "{arch}: {} inputs batched, worst rel {worst:.2e} against each alone",
            cases.len()
        );
    }
}

/// The Whisper encoders (conv stem, tower, pooling or frame stacking, projector) on the device
/// give the CPU's embeddings with one read-back, including a window whose frame count is odd
/// after the stride-2 convolution (Qwen2-Audio drops the unpaired frame, Voxtral zero-pads
/// its last stack).
#[test]
fn audio_encoders_run_whole_on_the_gpu_with_one_read_back() {
    let _one = DEVICE.lock().unwrap_or_else(|e| e.into_inner());
    for arch in ["qwen2audio", "voxtral"] {
        let Some((gpu, ctx)) = gpu_model(arch) else {
            return;
        };
        let cpu = ClipModel::load(fixture(arch).join("mmproj.gguf")).expect("load mmproj");
        let n_mel = cpu.hparams().n_mel_bins;
        for frames in [200, 202] {
            let mel: Vec<f32> = (0..n_mel * frames)
                .map(|i| ((i as f32) * 0.013).sin() * 0.8 - 0.1)
                .collect();
            let want = cpu.encode(&mel, frames, n_mel).expect("cpu encode");
            let before = ctx.downloads();
            let got = gpu.encode(&mel, frames, n_mel).expect("gpu encode");
            assert_eq!(ctx.downloads() - before, 1, "{arch}: buffers read back");
            assert_eq!(got.n_tokens, want.n_tokens, "{arch} {frames} frames");
            let (err, scale) = max_err(&got.data, &want.data);
            println!(
                "{arch} {frames} frames: {} tokens, gpu vs cpu rel {:.2e}",
                got.n_tokens,
                err / scale
            );
            assert!(err <= 1e-4 * scale, "{arch} {frames} frames");
        }
    }
}
