//! Arbitrary text through the real tokenizers of the fixture models (SentencePiece and four
//! byte-level BPE pre-tokenizers): tokenize, detokenize, stream-decode. Never a panic, every id
//! inside the vocabulary; arbitrary ids (also out of range) detokenize without a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llm::{StreamDecoder, Tokenizer};

/// One model per tokenizer family: gemma3 (SPM), qwen2vl (qwen2), idefics3 (smollm),
/// mistral3 (tekken), pixtral.
const MODELS: &[&str] = &["gemma3", "qwen2vl", "idefics3", "mistral3", "pixtral"];

fn tokenizers() -> &'static [Tokenizer] {
    static ALL: OnceLock<Vec<Tokenizer>> = OnceLock::new();
    ALL.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        MODELS
            .iter()
            .map(|m| {
                let file = gguf::GgufFile::open(root.join(m).join("model.gguf"))
                    .unwrap_or_else(|e| panic!("{m}: {e}"));
                Tokenizer::from_gguf(&file).unwrap_or_else(|e| panic!("{m}: {e}"))
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let all = tokenizers();
    let tok = &all[usize::from(flags & 7) % all.len()];
    let (add_special, parse_special) = (flags & 8 != 0, flags & 16 != 0);
    if flags & 32 != 0 {
        // Raw ids, two bytes each, spread past the vocabulary.
        let ids: Vec<u32> = rest
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])) * 3)
            .collect();
        let _ = tok.detokenize(&ids, flags & 64 != 0, flags & 128 != 0);
        let mut stream = StreamDecoder::new(tok, flags & 64 != 0);
        for &id in &ids {
            let _ = stream.push(id);
        }
        let _ = stream.finish();
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let ids = tok.tokenize(&text, add_special, parse_special);
    for &id in &ids {
        assert!(
            (id as usize) < tok.n_vocab(),
            "id {id} out of the vocabulary"
        );
    }
    let _ = tok.detokenize(&ids, false, parse_special);
    let mut stream = StreamDecoder::new(tok, parse_special);
    let mut streamed = String::new();
    for &id in &ids {
        streamed.push_str(&stream.push(id));
    }
    streamed.push_str(&stream.finish());
});
