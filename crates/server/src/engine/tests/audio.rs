//! Audio on the tiny Qwen2-Audio fixture: the library reference, media-cache reuse, two
//! clips, media of the wrong kind.

use super::*;

fn audio_config(n_slots: usize) -> EngineConfig {
    EngineConfig {
        // The reference was computed with an f32 KV cache.
        kv_type: KvType::F32,
        ..config("qwen2audio", n_slots, 2048, true)
    }
}

fn clip(file: &str) -> mtmd::Audio {
    mtmd::Audio::from_file(fixture("qwen2audio", file), &mtmd::DecodeOptions::default())
        .expect("fixture audio")
}

/// The fixture's prompt.txt as chat messages: the system turn, then the clip and the question.
fn audio_question(system: &str, question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(system),
        ChatMessage::with_content(
            "user",
            MessageContent::Parts(vec![
                ContentPart::input_audio("", ""),
                ContentPart::text(question),
            ]),
        ),
    ]
}

const REF_SYSTEM: &str = "You are a helpful assistant.";
const REF_QUESTION: &str = "What do you hear in this audio clip?";

#[test]
fn audio_chat_equals_the_library_reference() {
    let engine = Engine::load(audio_config(1)).unwrap();
    let info = engine.info();
    assert!(info.audio && !info.vision, "{info:?}");
    assert_eq!(info.modalities(), vec!["text", "audio"]);
    let dir = testkit::fixture("qwen2audio");
    let reference = testkit::reference_json(&dir);
    let messages = audio_question(REF_SYSTEM, REF_QUESTION);
    // The chat template renders exactly the reference prompt.
    let rendered = engine.shared.model.apply_chat(&messages, true).unwrap();
    let prompt = std::fs::read_to_string(dir.join("prompt.txt")).unwrap();
    assert_eq!(rendered, prompt);
    // Cases whose 16 greedy steps all have a clear top-2 margin (>= 5e-2).
    for case in ["wav16k", "flac16k"] {
        let case = &reference["cases"][case];
        let file = case["input_file"].as_str().unwrap();
        let want = case["greedy_text"].as_str().unwrap();
        let n = case["greedy_ids"].as_array().unwrap().len();
        let out = run_one(
            &engine,
            media_request(messages.clone(), vec![MediaItem::Audio(clip(file))], n),
        );
        assert!(out.error.is_none(), "{file}: {:?}", out.error);
        assert_eq!(out.text, want, "{file}");
        let usage = out.usage.unwrap();
        assert_eq!(
            usage.prompt_tokens,
            case["n_prompt_tokens"].as_u64().unwrap() as usize,
            "{file}: audio tokens count in the prompt"
        );
        assert_eq!(usage.completion_tokens, n);
    }
    let m = engine.metrics();
    // WAV and FLAC hold the same samples: one encode, then the KV cache kept it all.
    assert_eq!((m.audio_encoded, m.images_encoded), (1, 0), "{m:?}");
    assert!(m.audio_encode_seconds > 0.0);
}

#[test]
fn audio_embeddings_come_from_the_media_cache() {
    let engine = Engine::load(audio_config(1)).unwrap();
    let speech = || MediaItem::Audio(clip("speech_a_16k_mono.wav"));
    let a = run_one(
        &engine,
        media_request(
            audio_question("Be brief.", "What is it?"),
            vec![speech()],
            6,
        ),
    );
    assert!(a.error.is_none(), "{:?}", a.error);
    // Another start: the slot's KV cache diverges before the clip, the encoder is skipped.
    let b = run_one(
        &engine,
        media_request(
            audio_question("Be terse.", "What is it?"),
            vec![speech()],
            6,
        ),
    );
    assert!(b.error.is_none(), "{:?}", b.error);
    let m = engine.metrics();
    assert_eq!(m.audio_encoded, 1, "{m:?}");
    assert_eq!(m.media_cache_hits, 1, "{m:?}");
    // The cached embeddings give what a fresh engine computes.
    let fresh = Engine::load(audio_config(1)).unwrap();
    let c = run_one(
        &fresh,
        media_request(
            audio_question("Be terse.", "What is it?"),
            vec![speech()],
            6,
        ),
    );
    assert_eq!(b.text, c.text);
    assert_eq!(
        b.usage.unwrap().prompt_tokens,
        c.usage.unwrap().prompt_tokens
    );
}

#[test]
fn transcription_prompt_and_two_clips_in_one_message() {
    let engine = Engine::load(audio_config(2)).unwrap();
    let transcribe = vec![ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::input_audio("", ""),
            ContentPart::text("Transcribe this audio."),
        ]),
    )];
    let one = run_one(
        &engine,
        media_request(
            transcribe,
            vec![MediaItem::Audio(clip("short_0p1s_16k.wav"))],
            4,
        ),
    );
    assert!(one.error.is_none(), "{:?}", one.error);
    let two = vec![ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::input_audio("", ""),
            ContentPart::input_audio("", ""),
            ContentPart::text("Compare them."),
        ]),
    )];
    let out = run_one(
        &engine,
        media_request(
            two,
            vec![
                MediaItem::Audio(clip("short_0p1s_16k.wav")),
                MediaItem::Audio(clip("quiet_a_16k_mono.wav")),
            ],
            4,
        ),
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    // Each clip is one 30 s window of 750 tokens.
    assert!(out.usage.unwrap().prompt_tokens > 1500, "{out:?}");
    assert_eq!(engine.metrics().audio_encoded, 2, "short clip cached");
}

#[test]
fn media_of_the_wrong_kind_is_the_clients_fault() {
    // Audio to a vision mmproj, an image to an audio mmproj, audio without any mmproj.
    let cases = [
        (
            config("gemma3", 1, 1024, true),
            MediaItem::Audio(clip("short_0p1s_16k.wav")),
        ),
        (
            audio_config(1),
            MediaItem::Image(image("gemma3", "tiny.png")),
        ),
        (
            config("gemma3", 1, 1024, false),
            MediaItem::Audio(clip("short_0p1s_16k.wav")),
        ),
    ];
    for (config, item) in cases {
        let engine = Engine::load(config).unwrap();
        let part = if item.is_audio() {
            ContentPart::input_audio("", "")
        } else {
            ContentPart::image()
        };
        let messages = vec![ChatMessage::with_content(
            "user",
            MessageContent::Parts(vec![part, ContentPart::text("Hi")]),
        )];
        let out = run_one(&engine, media_request(messages, vec![item], 4));
        match out.error {
            Some(EngineError::InvalidRequest(m)) => {
                assert!(m.contains("audio") || m.contains("image"), "{m}")
            }
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        // The slot goes on serving.
        let ok = run_one(&engine, text_request("Hello", 2));
        assert!(ok.error.is_none(), "{:?}", ok.error);
    }
}
