//! Tokenizers of two real models (Gemma 3 270M: SentencePiece; Qwen2.5-Coder 0.5B: byte-level
//! BPE) against llama.cpp's own tokenization in tests/fixtures/real-text.
//!
//! The models live outside the work tree (scripts/fetch-test-models.sh). Without them these
//! tests print SKIPPED and pass, unless MTMD_REQUIRE_MODELS=1 (CI), where they fail.

use std::path::PathBuf;

use llm::tokenizer::{StreamDecoder, Tokenizer};
use serde_json::Value as Json;

const GEMMA: &str = "gemma-3-270m-q4_k_m";
const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m";

fn fixture_dir(model: &str) -> PathBuf {
    testkit::fixture("real-text").join(model)
}

fn load(model: &str) -> Option<Tokenizer> {
    let path = testkit::real_model(&format!("{model}.gguf"))?;
    let file = gguf::GgufFile::open(&path).expect("model GGUF parses");
    Some(Tokenizer::from_gguf(&file).expect("tokenizer loads"))
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .expect("id array")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Compares one list; records a readable failure.
fn check(failures: &mut Vec<String>, what: &str, text: &str, got: &[u32], want: &[u32]) -> bool {
    if got == want {
        return true;
    }
    failures.push(format!(
        "{what} of {text:?}:\n   got  {got:?}\n   want {want:?}"
    ));
    false
}

fn check_tokenize_json(tok: &Tokenizer, model: &str) {
    let data = testkit::reference_json_file(&fixture_dir(model).join("tokenize.json"));
    let vocab = &data["vocab"];
    assert_eq!(tok.n_vocab() as u64, vocab["n_tokens"].as_u64().unwrap());
    assert_eq!(tok.bos().map(u64::from), vocab["bos"].as_u64());
    assert_eq!(tok.eos().map(u64::from), vocab["eos"].as_u64());
    assert_eq!(tok.eot().map(u64::from), vocab["eot"].as_u64());
    assert_eq!(tok.add_bos(), vocab["add_bos"].as_bool().unwrap());
    assert_eq!(tok.add_eos(), vocab["add_eos"].as_bool().unwrap());

    let cases = data["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    let mut matched = 0;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let mut ok = true;
        let want = ids(&case["ids"]);
        ok &= check(
            &mut failures,
            "ids",
            text,
            &tok.tokenize(text, true, true),
            &want,
        );
        ok &= check(
            &mut failures,
            "ids_parse_special_off",
            text,
            &tok.tokenize(text, true, false),
            &ids(&case["ids_parse_special_off"]),
        );
        ok &= check(
            &mut failures,
            "ids_no_bos",
            text,
            &tok.tokenize(text, false, true),
            &ids(&case["ids_no_bos"]),
        );

        let detok = tok.detokenize(&want, false, true);
        if detok != case["detokenized"].as_str().unwrap() {
            ok = false;
            failures.push(format!(
                "detokenized of {text:?}: got {detok:?}, want {}",
                case["detokenized"]
            ));
        }
        let pieces: Vec<String> = want
            .iter()
            .map(|&id| String::from_utf8_lossy(&tok.token_to_piece(id, true)).into_owned())
            .collect();
        let want_pieces: Vec<&str> = case["pieces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        if pieces != want_pieces {
            ok = false;
            failures.push(format!(
                "pieces of {text:?}: got {pieces:?}, want {want_pieces:?}"
            ));
        }

        // Streaming the ids gives the same text as decoding all pieces at once.
        let mut stream = StreamDecoder::new(tok, true);
        let mut streamed: String = want.iter().map(|&id| stream.push(id)).collect();
        streamed.push_str(&stream.finish());
        let all: Vec<u8> = want
            .iter()
            .flat_map(|&id| tok.token_to_piece(id, true))
            .collect();
        if streamed != String::from_utf8_lossy(&all) {
            ok = false;
            failures.push(format!("stream decode of {text:?}: {streamed:?}"));
        }
        matched += usize::from(ok);
    }
    println!(
        "{model}: {matched}/{} tokenize.json cases match llama.cpp exactly",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn check_generate_json(tok: &Tokenizer, model: &str) {
    let data = testkit::reference_json_file(&fixture_dir(model).join("generate.json"));
    let prompts = data["prompts"].as_array().expect("prompts");
    let mut failures = Vec::new();
    for case in prompts {
        let prompt = case["rendered_prompt"].as_str().unwrap();
        check(
            &mut failures,
            "prompt_ids",
            prompt,
            &tok.tokenize(prompt, true, true),
            &ids(&case["prompt_ids"]),
        );

        // The greedy continuation renders to the reference text, piece by piece.
        let generated = ids(&case["generated_ids"]);
        let bytes: Vec<u8> = generated
            .iter()
            .flat_map(|&id| tok.token_to_piece(id, true))
            .collect();
        let text = String::from_utf8_lossy(&bytes);
        let want = case["generated_text"].as_str().unwrap();
        if text != want {
            failures.push(format!("generated_text: got {text:?}, want {want:?}"));
        }
        // Generation stopped exactly at the first end-of-generation token.
        let stopped = case["stopped_at_eog"].as_bool().unwrap();
        let (last, body) = generated.split_last().unwrap();
        assert_eq!(tok.is_eog(*last), stopped, "last generated token {last}");
        assert!(
            body.iter().all(|&id| !tok.is_eog(id)),
            "no end-of-generation token before the last"
        );
    }
    println!(
        "{model}: {}/{} generate.json prompts tokenize identically",
        prompts.len() - failures.len(),
        prompts.len()
    );
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn gemma3_matches_llama_cpp() {
    let Some(tok) = load(GEMMA) else { return };
    check_tokenize_json(&tok, GEMMA);
    check_generate_json(&tok, GEMMA);
    assert!(
        tok.is_eog(1) && tok.is_eog(106),
        "<eos> and <end_of_turn> end generation"
    );
    assert_eq!(tok.token_id("<start_of_image>"), Some(255999));
    assert_eq!(tok.token_id("<end_of_image>"), Some(256000));
}

#[test]
fn qwen25_matches_llama_cpp() {
    let Some(tok) = load(QWEN) else { return };
    check_tokenize_json(&tok, QWEN);
    check_generate_json(&tok, QWEN);
    assert!(
        tok.is_eog(151645) && tok.is_eog(151643),
        "<|im_end|> and <|endoftext|> end generation"
    );
    assert!(!tok.is_eog(151644), "<|im_start|> does not");
}
