//! `mtmd synth` on shrunken presets: our loaders accept the files with the preset's
//! dimensions, the key and tensor-name sets equal those of the llama.cpp-converted fixture of
//! the same family, and a seed fixes every byte.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use gguf::{GgufFile, GgufWriter, MappedBytes};

use super::*;
use crate::cmd::synth_presets::{EncoderKind, VocabKind};
use crate::cmd::synth_vocab::tokenizer_kvs;

fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mtmd-synth-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `blk.7.attn_q.weight` -> `blk.#.attn_q.weight` (likewise `v.blk`, `a.blk`, `v.deepstack`).
fn normalize(name: &str) -> String {
    for prefix in ["v.blk.", "a.blk.", "blk.", "v.deepstack."] {
        if let Some(rest) = name.strip_prefix(prefix)
            && let Some((idx, tail)) = rest.split_once('.')
            && idx.bytes().all(|b| b.is_ascii_digit())
        {
            return format!("{prefix}#.{tail}");
        }
    }
    name.to_owned()
}

fn keys(f: &GgufFile) -> BTreeSet<String> {
    f.metadata().iter().map(|(k, _)| k.clone()).collect()
}

fn tensor_names(f: &GgufFile) -> BTreeSet<String> {
    f.tensors().iter().map(|t| normalize(&t.name)).collect()
}

fn fixture_dir(p: &Preset) -> &'static str {
    match p.encoder.kind {
        EncoderKind::Gemma3 => "gemma3",
        EncoderKind::Qwen2Vl => "qwen2vl",
        EncoderKind::Qwen25Vl => "qwen25vl",
        EncoderKind::Qwen3Vl => "qwen3vl",
        EncoderKind::Pixtral => "pixtral",
        EncoderKind::Mistral3 => "mistral3",
        EncoderKind::Idefics3 => "idefics3",
        EncoderKind::Qwen2Audio => "qwen2audio",
        EncoderKind::Voxtral => "voxtral",
    }
}

fn open(path: &std::path::Path) -> GgufFile {
    GgufFile::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_preset(name: &str) {
    let real = resolve(name, true).unwrap();
    let p = shrink_for_tests(real.clone());
    let dir = tmpdir(name);
    let (text_path, mmproj_path) = write_preset(&p, &dir, 7, WeightType::F16, false).unwrap();

    // (1) Our loaders accept both files with the preset's dimensions.
    let model = llm::Model::load(&text_path).unwrap();
    let hp = model.hparams();
    let t = &p.text;
    assert_eq!(hp.arch_name, t.arch.gguf_name());
    assert_eq!(
        (
            hp.n_layer,
            hp.n_embd,
            hp.n_ff,
            hp.n_head,
            hp.n_head_kv,
            hp.head_dim
        ),
        (
            t.n_layer,
            t.n_embd,
            t.n_ff,
            t.n_head,
            t.n_head_kv,
            t.head_dim
        ),
        "{name}: text hparams"
    );
    assert_eq!(hp.n_ctx_train, t.n_ctx_train as usize);
    assert_eq!(hp.n_deepstack, t.n_deepstack);
    assert_eq!(model.tokenizer.n_vocab(), t.n_vocab);
    let encoder = mtmd::ClipEncoder::load(&mmproj_path, None, None, Some(1)).unwrap();
    let ehp = encoder.clip_model().hparams();
    let e = &p.encoder;
    assert_eq!(ehp.projector_type, e.kind.projector_type());
    assert_eq!(
        (
            ehp.n_layer,
            ehp.n_embd,
            ehp.n_ff,
            ehp.n_head,
            ehp.projection_dim
        ),
        (e.n_layer, e.n_embd, e.n_ff, e.n_head, t.n_embd),
        "{name}: encoder hparams"
    );
    if !e.kind.is_audio() {
        assert_eq!((ehp.patch_size, ehp.image_size), (e.patch, e.image_size));
    }
    // The context checks that the encoder's output width is what the text model takes.
    mtmd::Context::new(&mmproj_path, Arc::new(model), Default::default())
        .unwrap_or_else(|e| panic!("{name}: context: {e}"));

    // (2) Same keys and tensor names as llama.cpp's converter wrote for the family.
    let fixture = testkit::fixture(fixture_dir(&p));
    for (ours, theirs, is_text) in [
        (&text_path, fixture.join("model.gguf"), true),
        (&mmproj_path, fixture.join("mmproj.gguf"), false),
    ] {
        let (ours, theirs) = (open(ours), open(&theirs));
        let mut want_keys = keys(&theirs);
        let mut want_tensors = tensor_names(&theirs);
        // Where the real model differs from the tiny one the fixture was converted from.
        if is_text && real.text.tied {
            want_tensors.remove("output.weight");
        }
        if !is_text && e.kind == EncoderKind::Gemma3 {
            // written only when the pooling is not the default 4 (the fixture's is 2)
            want_keys.remove("clip.vision.projector.scale_factor");
        }
        assert_eq!(keys(&ours), want_keys, "{name}: keys");
        assert_eq!(tensor_names(&ours), want_tensors, "{name}: tensors");
    }

    // (3) The same seed writes the same bytes; another seed other weights.
    let again = tmpdir(&format!("{name}-again"));
    let (t2, m2) = write_preset(&p, &again, 7, WeightType::F16, false).unwrap();
    assert!(std::fs::read(&text_path).unwrap() == std::fs::read(&t2).unwrap());
    assert!(std::fs::read(&mmproj_path).unwrap() == std::fs::read(&m2).unwrap());
    let (t3, _) = write_preset(&p, &again, 8, WeightType::F16, false).unwrap();
    assert!(std::fs::read(&text_path).unwrap() != std::fs::read(&t3).unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&again).unwrap();
}

macro_rules! preset_tests {
    ($($test:ident => $name:literal,)*) => {
        $( #[test] fn $test() { check_preset($name); } )*

        #[test]
        fn every_preset_has_a_test() {
            assert_eq!(NAMES.to_vec(), vec![$($name),*]);
        }
    };
}

preset_tests! {
    gemma3_4b => "gemma3-4b",
    qwen2_vl_2b => "qwen2-vl-2b",
    qwen25_vl_3b => "qwen2.5-vl-3b",
    qwen3_vl_2b => "qwen3-vl-2b",
    pixtral_12b => "pixtral-12b",
    mistral_small_31 => "mistral-small-3.1",
    smolvlm_256m => "smolvlm-256m",
    qwen2_audio_7b => "qwen2-audio-7b",
    voxtral_mini_3b => "voxtral-mini-3b",
}

#[test]
fn q8_0_text_model_loads_and_is_smaller() {
    let p = shrink_for_tests(resolve("smolvlm-256m", true).unwrap());
    let dir = tmpdir("q8");
    let (f16_path, _) = write_preset(&p, &dir.join("f16"), 1, WeightType::F16, false).unwrap();
    let (q8_path, _) = write_preset(&p, &dir.join("q8"), 1, WeightType::Q8_0, false).unwrap();
    let model = llm::Model::load(&q8_path).unwrap();
    assert_eq!(model.hparams().n_embd, 576);
    let f = open(&q8_path);
    let q = f.tensor("blk.0.ffn_up.weight").unwrap();
    assert_eq!(q.ggml_type, gguf::GgmlType::Q8_0);
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    assert!(size(&q8_path) < size(&f16_path));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real-size vocabularies load in our tokenizer, and the chat template's special
/// tokens come out as single tokens.
#[test]
fn real_size_vocabularies_load_and_keep_specials_whole() {
    for name in [
        "gemma3-4b",
        "qwen3-vl-2b",
        "pixtral-12b",
        "smolvlm-256m",
        "voxtral-mini-3b",
    ] {
        let p = resolve(name, false).unwrap();
        let mut w = GgufWriter::new();
        w.add_kv("general.architecture", gguf::Value::String("llama".into()));
        for (k, v) in tokenizer_kvs(p.text.vocab, p.text.n_vocab, p.chat_template) {
            w.add_kv(&k, v);
        }
        let file = GgufFile::from_bytes(MappedBytes::from_vec(w.to_bytes())).unwrap();
        let tok = llm::tokenizer::Tokenizer::from_gguf(&file).unwrap();
        assert_eq!(tok.n_vocab(), p.text.n_vocab, "{name}");
        let special = match p.text.vocab {
            VocabKind::Gemma3 => "<start_of_turn>",
            VocabKind::Tekken { .. } => "[INST]",
            VocabKind::SmolLm => "<end_of_utterance>",
            _ => "<|im_start|>",
        };
        let ids = tok.tokenize(&format!("{special}hello world"), false, true);
        assert!(ids.len() >= 2, "{name}: {ids:?}");
        let plain = tok.tokenize(special, false, true);
        assert_eq!(plain.len(), 1, "{name}: {special} is one token");
    }
}

#[test]
fn unknown_preset_lists_the_valid_names_and_bad_dirs_are_clear() {
    let err = resolve("llava-7b", false).unwrap_err().to_string();
    assert!(
        err.contains("llava-7b") && err.contains("qwen2.5-vl-3b"),
        "{err}"
    );
    let file = tmpdir("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let p = shrink_for_tests(resolve("smolvlm-256m", true).unwrap());
    let err = write_preset(&p, &file.join("sub"), 0, WeightType::F16, false).unwrap_err();
    assert!(matches!(err, SynthError::OutDir { .. }), "{err}");
    assert!(err.to_string().contains("not-a-dir"), "{err}");
    std::fs::remove_file(&file).unwrap();
}

/// llama.cpp adds (or interpolates) position tables into F32 activations and has no F32 +
/// F16 kernel for it: every position embedding must be F32, SigLIP patch embeddings too.
#[test]
fn position_embeddings_are_f32_for_llama_cpp() {
    for name in NAMES {
        let p = resolve(name, false).unwrap();
        let plan = crate::cmd::synth_layout::mmproj_plan(&p, &p.encoder, p.text.n_embd);
        for t in &plan.tensors {
            if t.name.contains("position_embd") {
                assert_eq!(t.ggml_type, gguf::GgmlType::F32, "{name}: {}", t.name);
            }
        }
    }
}
