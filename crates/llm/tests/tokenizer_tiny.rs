//! Tokenizers of the tiny multimodal fixtures against the text chunks llama.cpp's libmtmd
//! produced (tests/fixtures/<arch>/reference.json).
//!
//! Two checks per text chunk:
//! 1. its detokenized `text` tokenizes back to its `tokens` (BOS text stripped from the first
//!    chunk and re-added through `add_special`);
//! 2. libmtmd's rule rebuilds all text chunks from the prompt file: the prompt is split at
//!    `<__media__>`; every text part and the media begin/end strings (`<start_of_image>` ...)
//!    are tokenized on their own with add_special = false, parse_special = true; consecutive
//!    text tokens form one chunk; BOS goes in front of the first chunk when the model adds it.

use llm::tokenizer::Tokenizer;
use serde_json::Value as Json;

const MARKER: &str = "<__media__>";

use testkit::fixture;

fn load(arch: &str) -> (Tokenizer, Json) {
    let dir = fixture(arch);
    let file = gguf::GgufFile::open(dir.join("model.gguf")).expect("fixture GGUF parses");
    let tok = Tokenizer::from_gguf(&file).expect("tokenizer loads");
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    (
        tok,
        serde_json::from_str(&text).expect("reference.json parses"),
    )
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The text chunks of a case, in order: (detokenized text, token ids).
fn text_chunks(case: &Json) -> Vec<(String, Vec<u32>)> {
    case["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "text")
        .map(|c| (c["text"].as_str().unwrap().to_string(), ids(&c["tokens"])))
        .collect()
}

/// Check 1: every chunk's text round-trips to its tokens. Returns the number of chunks.
fn check_round_trip(tok: &Tokenizer, arch: &str, data: &Json) -> usize {
    let mut n = 0;
    for (name, case) in data["cases"].as_object().unwrap() {
        for (i, (text, want)) in text_chunks(case).into_iter().enumerate() {
            let bos_text = tok.bos().and_then(|b| tok.token_text(b)).unwrap_or("");
            let got = match text.strip_prefix(bos_text) {
                Some(rest) if i == 0 && tok.add_bos() => tok.tokenize(rest, true, true),
                _ => tok.tokenize(&text, false, true),
            };
            assert_eq!(got, want, "{arch}/{name} chunk {i} {text:?}");
            n += 1;
        }
    }
    n
}

/// libmtmd's media wrapping strings for the fixtures' projectors.
fn media_wrap(arch: &str) -> (&'static str, &'static str) {
    match arch {
        "gemma3" => ("<start_of_image>", "<end_of_image>"),
        "qwen2vl" | "qwen25vl" | "qwen3vl" => ("<|vision_start|>", "<|vision_end|>"),
        "pixtral" | "mistral3" => ("", "[IMG_END]"),
        "qwen2audio" => ("<|audio_bos|>", "<|audio_eos|>"),
        "voxtral" => ("[BEGIN_AUDIO]", ""),
        other => panic!("no media wrapping known for {other}"),
    }
}

/// Check 2: rebuild the text chunks from the prompt file as libmtmd does.
fn mtmd_text_chunks(tok: &Tokenizer, arch: &str, prompt: &str) -> Vec<Vec<u32>> {
    let (begin, end) = media_wrap(arch);
    let mut chunks: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    let mut parts = prompt.split(MARKER).peekable();
    while let Some(part) = parts.next() {
        current.extend(tok.tokenize(part, false, true));
        if parts.peek().is_some() {
            current.extend(tok.tokenize(begin, false, true));
            chunks.push(std::mem::take(&mut current)); // the media chunk comes here
            current.extend(tok.tokenize(end, false, true));
        }
    }
    chunks.push(current);
    chunks.retain(|c| !c.is_empty());
    if tok.add_bos()
        && let Some(bos) = tok.bos()
    {
        // (Were the prompt to start with media, libmtmd would make a chunk of BOS alone.)
        chunks[0].insert(0, bos);
    }
    chunks
}

fn check_prompt_rebuild(tok: &Tokenizer, arch: &str, data: &Json) {
    for (name, case) in data["cases"].as_object().unwrap() {
        let file = case["prompt_file"].as_str().unwrap_or("prompt.txt");
        let prompt = std::fs::read_to_string(fixture(arch).join(file)).unwrap();
        let want: Vec<Vec<u32>> = text_chunks(case).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            mtmd_text_chunks(tok, arch, &prompt),
            want,
            "{arch}/{name} from {file}"
        );
    }
}

fn run(arch: &str) {
    let (tok, data) = load(arch);
    let n = check_round_trip(&tok, arch, &data);
    if arch != "idefics3" {
        // Idefics3 tiles the image and writes per-tile texts between the tiles; that is
        // libmtmd's business, so only the round trip is checked there.
        check_prompt_rebuild(&tok, arch, &data);
    }
    println!(
        "{arch}: {n} text chunks reproduced ({} pre-tokenizer)",
        tok.pre_tokenizer()
    );
}

#[test]
fn gemma3_chunks() {
    run("gemma3");
}

#[test]
fn qwen2vl_chunks() {
    run("qwen2vl");
}

#[test]
fn qwen25vl_chunks() {
    run("qwen25vl");
}

#[test]
fn qwen3vl_chunks() {
    run("qwen3vl");
}

#[test]
fn pixtral_chunks() {
    run("pixtral");
}

#[test]
fn mistral3_chunks() {
    run("mistral3");
}

#[test]
fn idefics3_chunks() {
    run("idefics3");
}

#[test]
fn qwen2audio_chunks() {
    run("qwen2audio");
}

#[test]
fn voxtral_chunks() {
    run("voxtral");
}

#[test]
fn tiny_vocab_specials() {
    let (tok, _) = load("qwen2vl");
    let im_end = tok.token_id("<|im_end|>").unwrap();
    assert!(tok.is_eog(im_end));
    assert!(tok.is_control(tok.token_id("<|vision_start|>").unwrap()));
    let (tok, _) = load("gemma3");
    assert!(tok.is_eog(tok.token_id("<end_of_turn>").unwrap()));
    assert_eq!(tok.eot(), tok.token_id("<end_of_turn>"));
    let (tok, _) = load("voxtral");
    assert!(tok.is_eog(tok.eos().unwrap()));
}
