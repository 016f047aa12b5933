//! Chunking rules on the fixtures' real tokenizers: marker counting, BOS placement, framing.

use llm::Model;
use mtmd::{Chunk, Framing, MtmdError, tokenize_with_media};

fn model(arch: &str) -> Model {
    Model::load(testkit::fixture(arch).join("model.gguf")).expect("fixture model loads")
}

/// A stand-in for the media chunk: the rules under test do not look inside it.
fn media(_: usize) -> mtmd::Result<Vec<Chunk>> {
    Ok(vec![Chunk::Text(vec![])])
}

const GEMMA: &Framing = &Framing::wrap("<start_of_image>", "<end_of_image>");

#[test]
fn marker_count_must_match_bitmaps() {
    let m = model("qwen2vl");
    let err = tokenize_with_media(
        &m.tokenizer,
        "a <__media__> b",
        "<__media__>",
        GEMMA,
        2,
        media,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            MtmdError::MarkerCount {
                markers: 1,
                bitmaps: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = tokenize_with_media(&m.tokenizer, "x", "", GEMMA, 0, media).unwrap_err();
    assert!(matches!(err, MtmdError::EmptyMarker));
}

#[test]
fn text_only_prompt_is_plain_tokenization() {
    for arch in ["gemma3", "qwen2vl"] {
        let m = model(arch);
        let text = "<start_of_turn>user\nHello there<end_of_turn>\n";
        let chunks =
            tokenize_with_media(&m.tokenizer, text, "<__media__>", GEMMA, 0, media).unwrap();
        assert_eq!(chunks.len(), 1);
        let Chunk::Text(tokens) = &chunks.chunks[0] else {
            panic!("text chunk expected")
        };
        assert_eq!(tokens, &m.tokenizer.tokenize(text, true, true), "{arch}");
    }
}

#[test]
fn bos_leads_when_prompt_starts_with_media() {
    let m = model("gemma3");
    let bos = m.tokenizer.bos().expect("gemma3 has BOS");
    assert!(m.tokenizer.add_bos());
    let begin = m.tokenizer.tokenize(GEMMA.begin, false, true);
    let end = m.tokenizer.tokenize(GEMMA.end, false, true);
    let chunks = tokenize_with_media(&m.tokenizer, "<__media__>", "<__media__>", GEMMA, 1, |_| {
        Ok(vec![Chunk::Text(vec![u32::MAX])])
    })
    .unwrap();
    let texts: Vec<&Vec<u32>> = chunks
        .iter()
        .map(|c| match c {
            Chunk::Text(t) => t,
            _ => unreachable!(),
        })
        .collect();
    let mut first = vec![bos];
    first.extend(&begin);
    assert_eq!(texts, vec![&first, &vec![u32::MAX], &end]);

    // Without framing and without BOS (Qwen tokenizer), a leading image is the first chunk.
    let q = model("qwen2vl");
    assert!(!q.tokenizer.add_bos());
    let none = &Framing::wrap("", "");
    let chunks = tokenize_with_media(
        &q.tokenizer,
        "<__media__>hi",
        "<__media__>",
        none,
        1,
        |_| Ok(vec![Chunk::Text(vec![u32::MAX])]),
    )
    .unwrap();
    assert_eq!(chunks.len(), 2);
    assert!(matches!(&chunks.chunks[0], Chunk::Text(t) if t == &vec![u32::MAX]));
}
