//! Tokenizers over small hand-made vocabularies (the reference-data tests are in
//! crates/llm/tests/tokenizer_*.rs).

use std::collections::HashMap;

use gguf::{Array, Value, ValueType};

use super::pretokenize::ByteMap;
use super::*;

fn strings(items: &[&str]) -> Value {
    Value::Array(Array::new(
        ValueType::String,
        items
            .iter()
            .map(|s| Value::String((*s).to_string()))
            .collect(),
    ))
}

fn ints(items: &[i32]) -> Value {
    Value::Array(Array::new(
        ValueType::I32,
        items.iter().map(|&i| Value::I32(i)).collect(),
    ))
}

fn floats(items: &[f32]) -> Value {
    Value::Array(Array::new(
        ValueType::F32,
        items.iter().map(|&f| Value::F32(f)).collect(),
    ))
}

fn build(meta: &HashMap<String, Value>) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_metadata(|k| meta.get(k))
}

/// A SentencePiece vocabulary: control tokens, all 256 byte tokens, a few pieces.
fn spm_meta() -> HashMap<String, Value> {
    let mut texts: Vec<String> = ["<unk>", "<s>", "</s>", "<start_of_turn>"]
        .map(String::from)
        .to_vec();
    let mut types = vec![2, 3, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        texts.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -2.0),
        ("ab", -1.5),
        ("▁a", -1.2),
        ("▁ab", -0.5),
    ] {
        texts.push(piece.to_string());
        types.push(1);
        scores.push(score);
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    HashMap::from([
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("llama".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strings(&texts)),
        ("tokenizer.ggml.token_type".to_string(), ints(&types)),
        ("tokenizer.ggml.scores".to_string(), floats(&scores)),
        ("tokenizer.ggml.bos_token_id".to_string(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(2)),
    ])
}

/// A byte-level BPE vocabulary: the 256 byte characters, a few merges, ChatML specials.
fn bpe_meta() -> HashMap<String, Value> {
    let map = ByteMap::new();
    let mut texts: Vec<String> = (0..=255u8).map(|b| map.char_of(b).to_string()).collect();
    texts.extend(
        [
            "Ġt",
            "he",
            "Ġthe",
            "<|im_start|>",
            "<|im_end|>",
            "<|endoftext|>",
        ]
        .map(String::from),
    );
    let n = texts.len();
    let mut types = vec![1; n];
    types[n - 3..].fill(3);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    HashMap::from([
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String("gpt-2".into()),
        ),
        ("tokenizer.ggml.tokens".to_string(), strings(&texts)),
        ("tokenizer.ggml.token_type".to_string(), ints(&types)),
        (
            "tokenizer.ggml.merges".to_string(),
            strings(&["Ġ t", "h e", "Ġt he"]),
        ),
        (
            "tokenizer.ggml.bos_token_id".to_string(),
            Value::U32(n as u32 - 1),
        ),
        (
            "tokenizer.ggml.eos_token_id".to_string(),
            Value::U32(n as u32 - 2),
        ),
    ])
}

#[test]
fn spm_merges_by_score_and_falls_back_to_bytes() {
    let tok = build(&spm_meta()).unwrap();
    let id = |t: &str| tok.token_id(t).unwrap();
    // The space prefix makes "ab" start a word; "é" is not a piece: two byte tokens.
    assert_eq!(tok.tokenize("ab", true, true), [1, id("▁ab")]);
    assert_eq!(tok.tokenize("ab a", false, true), [id("▁ab"), id("▁a")]);
    assert_eq!(
        tok.tokenize("é", false, true),
        [id("▁"), id("<0xC3>"), id("<0xA9>")]
    );
    // The leading space added by tokenization is removed again.
    let ids = tok.tokenize("ab aé", false, true);
    assert_eq!(tok.detokenize(&ids, false, true), "ab aé");
    assert_eq!(
        tok.detokenize(&[1, id("▁ab")], true, true),
        " ab",
        "BOS removal keeps the space"
    );
}

#[test]
fn spm_special_tokens_need_parse_special() {
    let tok = build(&spm_meta()).unwrap();
    let sot = tok.token_id("<start_of_turn>").unwrap();
    let parsed = tok.tokenize("<start_of_turn>a", false, true);
    assert_eq!(
        parsed,
        [sot, tok.token_id("▁a").unwrap()],
        "a space prefix follows a special token"
    );
    let plain = tok.tokenize("<start_of_turn>", false, false);
    assert!(!plain.contains(&sot));
    assert_eq!(tok.detokenize(&plain, false, false), "<start_of_turn>");
    // Control tokens render only on request; the space is only stripped from the first token
    // (here the invisible control token), as in llama.cpp.
    assert_eq!(tok.detokenize(&parsed, false, false), " a");
    assert_eq!(tok.token_to_piece(sot, true), b"<start_of_turn>");
    assert!(tok.token_to_piece(sot, false).is_empty());
}

#[test]
fn bpe_merges_by_rank() {
    let tok = build(&bpe_meta()).unwrap();
    let the = tok.token_id("Ġthe").unwrap();
    let ids = tok.tokenize("the the", true, true);
    assert_eq!(
        ids,
        [tok.token_id("t").unwrap(), tok.token_id("he").unwrap(), the]
    );
    assert_eq!(tok.detokenize(&ids, false, true), "the the");
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert_eq!(tok.tokenize("x<|im_end|>", false, true)[1], im_end);
    assert!(tok.is_eog(im_end) && tok.is_eog(tok.token_id("<|endoftext|>").unwrap()));
    assert_eq!(tok.eot(), Some(im_end), "EOT is found by its text");
}

#[test]
fn bpe_detokenize_cleans_spaces_for_gpt2() {
    let tok = build(&bpe_meta()).unwrap();
    let ids = tok.tokenize("Hi , it 's", false, false);
    assert_eq!(tok.detokenize(&ids, false, false), "Hi, it's");
}

#[test]
fn rstrip_attribute_eats_following_whitespace() {
    let mut meta = bpe_meta();
    // llama.cpp gives every special token of Phi-3 models the rstrip attribute.
    meta.insert("general.name".into(), Value::String("Phi-3 mini".into()));
    let tok = build(&meta).unwrap();
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let a = tok.token_id("a").unwrap();
    assert_eq!(tok.tokenize("<|im_end|>  \n a", false, true), [im_end, a]);
}

#[test]
fn stream_decoder_holds_partial_characters() {
    let tok = build(&bpe_meta()).unwrap();
    let map = ByteMap::new();
    let byte = |b: u8| tok.token_id(&map.char_of(b).to_string()).unwrap();
    let mut s = StreamDecoder::new(&tok, false);
    assert_eq!(s.push(byte(b'a')), "a");
    assert_eq!(s.push(byte(0xC3)), "");
    assert_eq!(s.pending_bytes(), [0xC3]);
    assert_eq!(s.push(byte(0xA9)), "é");
    assert_eq!(
        s.push(byte(0xFF)),
        "\u{FFFD}",
        "a byte that never starts a character"
    );
    assert_eq!(s.push(byte(0xE6)), "");
    assert_eq!(s.finish(), "\u{FFFD}");
}

#[test]
fn metadata_errors_name_the_problem() {
    let mut meta = spm_meta();
    meta.remove("tokenizer.ggml.tokens");
    assert!(matches!(
        build(&meta),
        Err(TokenizerError::MissingKey("tokenizer.ggml.tokens"))
    ));

    let mut meta = spm_meta();
    meta.insert("tokenizer.ggml.model".into(), Value::String("rwkv".into()));
    assert!(matches!(build(&meta), Err(TokenizerError::UnsupportedModel(m)) if m == "rwkv"));

    let mut meta = bpe_meta();
    meta.insert(
        "tokenizer.ggml.pre".into(),
        Value::String("no-such-pre".into()),
    );
    assert!(matches!(
        build(&meta),
        Err(TokenizerError::UnsupportedPreTokenizer(_))
    ));

    let mut meta = spm_meta();
    meta.insert("tokenizer.ggml.tokens".into(), strings(&["a", "b", "a"]));
    meta.insert("tokenizer.ggml.token_type".into(), ints(&[1, 1, 1]));
    meta.insert("tokenizer.ggml.scores".into(), floats(&[0.0; 3]));
    assert!(matches!(
        build(&meta),
        Err(TokenizerError::DuplicateToken {
            first: 0,
            second: 2,
            ..
        })
    ));

    let mut meta = spm_meta();
    meta.insert("tokenizer.ggml.scores".into(), floats(&[0.0; 3]));
    assert!(matches!(
        build(&meta),
        Err(TokenizerError::ArrayTooShort { .. })
    ));

    let mut meta = spm_meta();
    meta.insert("tokenizer.ggml.model".into(), Value::U32(3));
    assert!(matches!(build(&meta), Err(TokenizerError::KeyType { .. })));

    // add_bos with no BOS token in the vocabulary.
    let mut meta = bpe_meta();
    meta.insert("tokenizer.ggml.bos_token_id".into(), Value::U32(1_000_000));
    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    let tok = build(&meta);
    assert!(tok.is_ok(), "BPE default BOS id 11 is used");
    meta.insert("tokenizer.ggml.tokens".into(), strings(&["a", "b"]));
    meta.insert("tokenizer.ggml.token_type".into(), ints(&[1, 1]));
    assert!(matches!(
        build(&meta),
        Err(TokenizerError::MissingSpecialToken { .. })
    ));
}

#[test]
fn empty_text_gives_only_bos() {
    let tok = build(&spm_meta()).unwrap();
    assert_eq!(tok.tokenize("", true, true), [1]);
    assert!(tok.tokenize("", false, true).is_empty());
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Tokenizer>();
    let tok = build(&spm_meta()).unwrap();
    assert!(format!("{tok:?}").contains("n_vocab: 266"));
}
