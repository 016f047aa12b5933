//! Golden tests: each vision fixture's reference pixels through our encoder against
//! llama.cpp's `mtmd_encode_chunk` output.

use clip::ClipModel;
use tensor::cpu::EncoderPrecision;
use testkit::{RefTensors, fixture};

/// The bound on `max |ours - llama.cpp| / max |llama.cpp|`: 3e-3 with f32 encoder matmuls
/// (the default); 1e-2 with `MTMD_ENCODER_PRECISION=bf16` (scripts/test.sh runs this file
/// again so), whose worst case measured on the fixtures is 6.2e-3 (the stems' matmuls in bf16
/// too since they run through `Exec::matmul_wide`).
fn bound() -> f32 {
    match tensor::cpu::encoder_precision() {
        EncoderPrecision::F32 => 3e-3,
        EncoderPrecision::Bf16 => 1e-2,
    }
}

/// Runs every image chunk of every case of `arch` and checks rows and chunk grid.
fn golden(arch: &str) {
    let dir = fixture(arch);
    let model = ClipModel::load(dir.join("mmproj.gguf")).expect("load mmproj");
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (case, c) in json["cases"].as_object().unwrap() {
        for chunk in c["chunks"].as_array().unwrap() {
            if chunk["type"] != "image" {
                continue;
            }
            let (pshape, pixels) = refs.get(chunk["pixels_tensor"].as_str().unwrap());
            let (h, w) = (pshape[2], pshape[3]);
            let (eshape, want) = refs.get(chunk["embd_tensor"].as_str().unwrap());
            let got = model.encode(pixels, w, h).expect("encode");
            assert_eq!(got.n_tokens, eshape[0], "{arch}/{case}: n_tokens");
            assert_eq!(model.n_embd_out(), eshape[1], "{arch}/{case}: n_embd_out");
            assert_eq!(
                got.nx as u64,
                chunk["nx"].as_u64().unwrap(),
                "{arch}/{case}: nx"
            );
            assert_eq!(
                got.ny as u64,
                chunk["ny"].as_u64().unwrap(),
                "{arch}/{case}: ny"
            );
            assert_eq!(got.data.len(), want.len());
            let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max_abs = got
                .data
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let rel = max_abs / max_ref;
            println!(
                "{arch}/{case}/{}: {}x{} -> {} tokens, max abs {max_abs:.3e}, rel {rel:.3e}",
                chunk["embd_tensor"], w, h, got.n_tokens
            );
            assert!(
                rel <= bound(),
                "{arch}/{case}: rel error {rel:.3e} > {:.0e}",
                bound()
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

#[test]
fn gemma3_golden() {
    golden("gemma3");
}

/// Every image of the gemma3 cases in one batched encode (two per tower pass when the
/// images are large, all at once here) against the reference of each.
#[test]
fn gemma3_batched_matches_each_image() {
    let dir = fixture("gemma3");
    let model = ClipModel::load(dir.join("mmproj.gguf")).expect("load mmproj");
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let mut inputs = Vec::new();
    let mut wants = Vec::new();
    for c in json["cases"].as_object().unwrap().values() {
        for chunk in c["chunks"].as_array().unwrap() {
            if chunk["type"] == "image" {
                let (pshape, pixels) = refs.get(chunk["pixels_tensor"].as_str().unwrap());
                inputs.push((pixels, pshape[3], pshape[2]));
                wants.push(refs.get(chunk["embd_tensor"].as_str().unwrap()).1);
            }
        }
    }
    // Twice over, so that the batch has more than one image even with one case.
    let inputs: Vec<clip::EncodeInput> = inputs
        .iter()
        .chain(&inputs)
        .map(|&(data, width, height)| clip::EncodeInput {
            data,
            width,
            height,
        })
        .collect();
    assert!(inputs.len() >= 2);
    let out = model.encoder().encode_batch(&inputs, &|_, _| {}).unwrap();
    for (k, (got, want)) in out.iter().zip(wants.iter().cycle()).enumerate() {
        let alone = model
            .encode(inputs[k].data, inputs[k].width, inputs[k].height)
            .unwrap();
        assert_eq!(
            got.data, alone.data,
            "image {k}: batched differs from alone"
        );
        let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let rel = got
            .data
            .iter()
            .zip(want.iter())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / max_ref;
        println!("gemma3 batched image {k}: rel {rel:.3e}");
        assert!(rel <= bound(), "image {k}: rel error {rel:.3e}");
    }
}

#[test]
fn unsupported_projector_is_named() {
    let err = clip::registry::lookup("no_such_projector").expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("no_such_projector") && msg.contains("gemma3"),
        "{msg}"
    );
}

#[test]
fn qwen2vl_golden() {
    golden("qwen2vl");
}

#[test]
fn qwen25vl_golden() {
    golden("qwen25vl");
}

#[test]
fn qwen3vl_golden() {
    golden("qwen3vl");
}

/// A minimal mmproj with the given projector type and only metadata.
fn metadata_only(projector: &str, has_vision: bool) -> gguf::GgufFile {
    use gguf::{GgufWriter, Value};
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("clip".into()));
    w.add_kv("clip.has_vision_encoder", Value::Bool(has_vision));
    w.add_kv("clip.projector_type", Value::String(projector.into()));
    for (k, v) in [
        ("image_size", 28u32),
        ("patch_size", 14),
        ("embedding_length", 8),
        ("feed_forward_length", 16),
        ("block_count", 1),
        ("attention.head_count", 2),
        ("projection_dim", 8),
    ] {
        w.add_kv(&format!("clip.vision.{k}"), Value::U32(v));
    }
    let bytes = gguf::MappedBytes::from_vec(w.to_bytes());
    gguf::GgufFile::from_bytes(bytes).expect("parse")
}

#[test]
fn load_rejects_unknown_projector_with_supported_list() {
    let err = ClipModel::from_gguf(metadata_only("llava_next_2000", true)).expect_err("fails");
    let msg = err.to_string();
    assert!(
        msg.contains("llava_next_2000") && msg.contains("qwen3vl_merger"),
        "{msg}"
    );
}

#[test]
fn load_rejects_missing_vision_encoder_and_missing_tensors() {
    let err = ClipModel::from_gguf(metadata_only("gemma3", false)).expect_err("fails");
    assert!(matches!(err, clip::ClipError::NoVisionEncoder), "{err}");
    let err = ClipModel::from_gguf(metadata_only("gemma3", true)).expect_err("fails");
    assert!(err.to_string().contains("v.patch_embd.weight"), "{err}");
}

#[test]
fn encode_rejects_bad_pixel_buffers() {
    let model = ClipModel::load(fixture("qwen2vl").join("mmproj.gguf")).expect("load");
    // Wrong length, and a size that is not a multiple of patch * merge (28).
    assert!(model.encode(&[0.0; 10], 28, 28).is_err());
    assert!(model.encode(&vec![0.0; 3 * 30 * 28], 30, 28).is_err());
    let model = ClipModel::load(fixture("gemma3").join("mmproj.gguf")).expect("load");
    assert!(
        model.encode(&vec![0.0; 3 * 56 * 56], 56, 56).is_err(),
        "gemma3 needs 112x112"
    );
}

#[test]
fn model_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ClipModel>();
    let model = ClipModel::load(fixture("qwen3vl").join("mmproj.gguf")).expect("load");
    // Rows hold the main merger output plus 2 deepstack outputs, each 128 wide.
    assert_eq!(model.n_embd_out(), 128 * 3);
    assert_eq!(model.projector_type(), "qwen3vl_merger");
    assert!(format!("{model:?}").contains("qwen3vl_merger"));
}

/// The second fixture layout (pixtral, mistral3, idefics3): every image chunk's encoder input
/// (`enc_input`) through the encoder against its embeddings, and our preprocessing of the
/// case's image file against those encoder inputs: the k-th image chunk of a case is the k-th
/// piece `preprocess_pieces` makes (Idefics3: the tiles row-major, then the overview).
fn golden_from_files(arch: &str) {
    let dir = fixture(arch);
    let model = ClipModel::load(dir.join("mmproj.gguf")).expect("load mmproj");
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let mut checked = 0;
    for (case, c) in json["cases"].as_object().unwrap() {
        let bitmap = clip::Bitmap::from_file(dir.join(c["input_file"].as_str().unwrap())).unwrap();
        let ours = model
            .preprocess_pieces(&bitmap, &model.preprocess_params(None, None))
            .expect("preprocess");
        let image_chunks: Vec<&serde_json::Value> = c["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|chunk| chunk["type"] == "image")
            .collect();
        assert_eq!(ours.len(), image_chunks.len(), "{arch}/{case}: pieces");
        let mut worst_px = 0f32;
        let mut worst_rel = 0f32;
        for (k, chunk) in image_chunks.into_iter().enumerate() {
            let (pshape, pixels) = refs.get(chunk["encoder_input_tensor"].as_str().unwrap());
            let (h, w) = (pshape[2], pshape[3]);
            let piece = &ours[k].image;
            assert_eq!(
                (piece.width as usize, piece.height as usize),
                (w, h),
                "{arch}/{case}/{k}: size"
            );
            assert_eq!(
                piece.token_grid.nx as u64 * piece.token_grid.ny as u64,
                chunk["n_tokens"].as_u64().unwrap(),
                "{arch}/{case}/{k}: planned tokens"
            );
            let px_err = piece
                .data
                .iter()
                .zip(pixels)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(px_err <= 1e-5, "{arch}/{case}/{k}: pixels off by {px_err}");
            worst_px = worst_px.max(px_err);
            let (eshape, want) = refs.get(chunk["embd_tensor"].as_str().unwrap());
            let got = model.encode(pixels, w, h).expect("encode");
            assert_eq!(got.n_tokens, eshape[0], "{arch}/{case}: n_tokens");
            assert_eq!(got.n_tokens as u64, chunk["n_tokens"].as_u64().unwrap());
            assert_eq!(model.n_embd_out(), eshape[1], "{arch}/{case}: n_embd_out");
            let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max_abs = got
                .data
                .iter()
                .zip(want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let rel = max_abs / max_ref;
            println!(
                "{arch}/{case}/{}: {w}x{h} -> {} tokens, max abs {max_abs:.3e}, rel {rel:.3e}",
                chunk["embd_tensor"], got.n_tokens
            );
            assert!(
                rel <= bound(),
                "{arch}/{case}: rel error {rel:.3e} > {:.0e}",
                bound()
            );
            worst_rel = worst_rel.max(rel);
            checked += 1;
        }
        println!(
            "{arch}/{case}: {} pieces, pixels max abs {worst_px:.3e}, embeddings worst rel {worst_rel:.3e}",
            ours.len()
        );
        // All pieces in one batched encode: the same values as one by one.
        let images: Vec<&clip::preprocess::PreprocessedImage> =
            ours.iter().map(|p| &p.image).collect();
        let batched = model
            .encode_images_with_progress(&images, &|_, _| {})
            .expect("batched encode");
        for (k, (b, image)) in batched.iter().zip(&images).enumerate() {
            let alone = model.encode_image(image).expect("encode");
            assert_eq!(b.n_tokens, alone.n_tokens, "{arch}/{case}/{k}: tokens");
            let diff = b
                .data
                .iter()
                .zip(&alone.data)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                diff == 0.0,
                "{arch}/{case}/{k}: batched differs by {diff:.3e}"
            );
        }
        println!(
            "{arch}/{case}: batched encode of {} pieces equals one by one",
            images.len()
        );
    }
    assert!(checked > 0);
}

#[test]
fn pixtral_golden() {
    golden_from_files("pixtral");
}

#[test]
fn mistral3_golden() {
    golden_from_files("mistral3");
}

#[test]
fn idefics3_golden() {
    golden_from_files("idefics3");
}

/// Audio fixtures: each stored log-mel window (`enc_input`) through the encoder against the
/// embeddings of its chunk.
fn golden_audio(arch: &str) {
    let dir = fixture(arch);
    let model = ClipModel::load(dir.join("mmproj.gguf")).expect("load mmproj");
    let refs = RefTensors::load(&dir.join("reference.safetensors"));
    let json = testkit::reference_json(&dir);
    let mut checked = 0;
    for (case, c) in json["cases"].as_object().unwrap() {
        for chunk in c["chunks"].as_array().unwrap() {
            if chunk["type"] != "audio" {
                continue;
            }
            let Some(input_name) = chunk["encoder_input_tensor"].as_str() else {
                continue;
            };
            if !refs.has(input_name) {
                continue;
            }
            let (shape, mel) = refs.get(input_name);
            let (n_mel, n_frames) = (shape[2], shape[3]);
            let (eshape, want) = refs.get(chunk["embd_tensor"].as_str().unwrap());
            let got = model.encode(mel, n_frames, n_mel).expect("encode");
            assert_eq!(got.n_tokens, eshape[0], "{arch}/{case}: n_tokens");
            assert_eq!(model.audio_input(n_frames), Some((n_mel, eshape[0])));
            let (err, scale) = testkit::max_err(&got.data, want);
            println!(
                "{arch}/{case}: {n_mel}x{n_frames} mel -> {} tokens, max abs {err:.3e}, rel {:.3e}",
                got.n_tokens,
                err / scale
            );
            assert!(err <= bound() * scale, "{arch}/{case}: embeddings");
            checked += 1;
        }
    }
    assert!(checked > 0, "{arch}: no stored encoder input");
}

#[test]
fn qwen2audio_golden() {
    golden_audio("qwen2audio");
}

#[test]
fn voxtral_golden() {
    golden_audio("voxtral");
}

/// `file` rewritten through our writer with `kv` changes applied (`None` removes a key) and
/// tensors passed through `tensor` (which may change a tensor's dims and bytes).
fn rewritten(
    file: &gguf::GgufFile,
    kv: &[(&str, Option<gguf::Value>)],
    tensor: impl Fn(&str, Vec<u64>, Vec<u8>) -> (Vec<u64>, Vec<u8>),
) -> gguf::GgufFile {
    let mut w = gguf::GgufWriter::new();
    for (k, v) in file.metadata() {
        if !kv.iter().any(|(key, _)| key == k) {
            w.add_kv(k, v.clone());
        }
    }
    for (k, v) in kv {
        if let Some(v) = v {
            w.add_kv(k, v.clone());
        }
    }
    for info in file.tensors() {
        let bytes = file.tensor_data(info).to_vec();
        let (dims, bytes) = tensor(&info.name, info.dims.clone(), bytes);
        w.add_tensor(&info.name, info.ggml_type, &dims, &bytes);
    }
    gguf::GgufFile::from_bytes(gguf::MappedBytes::from_vec(w.to_bytes())).expect("parse")
}

/// Layer widths come from the tensors: metadata that disagrees with them (as some Qwen2-VL
/// conversions write) does not stop the file from loading or change what it computes, while
/// tensors that cannot fit together are a one-line error.
#[test]
fn widths_come_from_the_tensors_not_the_metadata() {
    use gguf::Value;
    for arch in ["qwen2vl", "gemma3", "qwen3vl", "pixtral"] {
        let path = fixture(arch).join("mmproj.gguf");
        let file = gguf::GgufFile::open(&path).unwrap();
        let odd = rewritten(
            &file,
            &[
                ("clip.vision.feed_forward_length", Some(Value::U32(7777))),
                ("clip.vision.projection_dim", Some(Value::U32(9999))),
            ],
            |_, d, b| (d, b),
        );
        let odd = ClipModel::from_gguf(odd).unwrap_or_else(|e| panic!("{arch}: {e}"));
        let model = ClipModel::load(&path).unwrap();
        assert_eq!(odd.n_embd_out(), model.n_embd_out(), "{arch}");
        let bitmap = clip::Bitmap::from_rgb(40, 30, vec![90; 40 * 30 * 3]).unwrap();
        let params = model.preprocess_params(None, None);
        let img = model.preprocess(&bitmap, &params).unwrap();
        let a = model.encode_image(&img).unwrap();
        let b = odd.encode_image(&img).unwrap();
        assert_eq!(a.data, b.data, "{arch}");
    }
    // A real inconsistency: ffn_down does not take what ffn_up makes.
    let file = gguf::GgufFile::open(fixture("qwen2vl").join("mmproj.gguf")).unwrap();
    let broken = rewritten(&file, &[], |name, dims, bytes| {
        if name == "v.blk.0.ffn_down.weight" {
            // Same bytes, ne [n_ff, d] read as [n_ff / 2, 2 d].
            (vec![dims[0] / 2, dims[1] * 2], bytes)
        } else {
            (dims, bytes)
        }
    });
    let err = ClipModel::from_gguf(broken).unwrap_err().to_string();
    println!("{err}");
    assert!(
        err.contains("v.blk.0.ffn_down.weight") && !err.contains('\n'),
        "{err}"
    );
}
