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

/// A media chunk standing for one piece of a tiled image.
fn piece(place: mtmd::Placement, index: usize) -> Chunk {
    Chunk::Image(mtmd::MediaChunk {
        kind: mtmd::MediaKind::Image,
        id: "img".into(),
        media_index: 0,
        piece: index,
        positions: mtmd::ImagePositions::Sequential,
        non_causal: false,
        prepared: mtmd::PreparedMedia {
            nx: 1,
            ny: 1,
            n_tokens: 1,
            place,
            data: std::sync::Arc::new(()),
        },
    })
}

/// A 2x2-tiled image plus overview with Idefics3's framing, on the SmolVLM vocabulary: the
/// texts between the pieces are llama.cpp's slice tokens, each text piece tokenized alone.
#[test]
fn tiles_are_framed_row_by_row_then_the_overview() {
    use mtmd::Placement;
    let m = model("idefics3");
    let framing = clip::registry::lookup("idefics3").unwrap().framing;
    let tiles = framing.tiles.expect("idefics3 frames tiles");
    let chunks = tokenize_with_media(
        &m.tokenizer,
        "A<__media__>B",
        "<__media__>",
        &framing,
        1,
        |_| {
            let mut pieces: Vec<Chunk> = (0..4)
                .map(|i| {
                    let (row, col) = (i / 2, i % 2);
                    piece(Placement::Tile { row, col }, i as usize)
                })
                .collect();
            pieces.push(piece(Placement::Overview, 4));
            Ok(pieces)
        },
    )
    .unwrap();
    let tok = |s: &str| m.tokenizer.tokenize(s, false, true);
    let texts: Vec<Option<Vec<u32>>> = chunks
        .iter()
        .map(|c| match c {
            Chunk::Text(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let cat = |parts: &[&str]| Some(parts.iter().flat_map(|p| tok(p)).collect::<Vec<u32>>());
    let t11 = (tiles.tile_begin)(1, 1);
    let t12 = (tiles.tile_begin)(1, 2);
    let t21 = (tiles.tile_begin)(2, 1);
    let t22 = (tiles.tile_begin)(2, 2);
    assert_eq!(
        texts,
        vec![
            cat(&["A", &t11]),
            None,
            cat(&[&t12]),
            None,
            cat(&["\n", &t21]),
            None,
            cat(&[&t22]),
            None,
            cat(&["\n\n", framing.begin]),
            None,
            cat(&[framing.end, "B"]),
        ]
    );
    // The SmolVLM ids llama.cpp emits: `\n` 201, `\n\n` 856, <fake_token_around_image> 1859,
    // <global-img> 1862, <row_2_col_1> 1869.
    assert_eq!(texts[4], Some(vec![201, 1859, 1869]));
    assert_eq!(texts[8].as_ref().unwrap()[..3], [856, 1859, 1862]);

    // Tiles under a framing without tile texts cannot be laid out.
    let err = tokenize_with_media(&m.tokenizer, "<__media__>", "<__media__>", GEMMA, 1, |_| {
        Ok(vec![piece(Placement::Tile { row: 0, col: 0 }, 0)])
    })
    .unwrap_err();
    assert!(matches!(err, MtmdError::UnframedTiles { .. }), "{err}");
}
