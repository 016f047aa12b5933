//! Audio: `input_audio` parts and `/v1/audio/transcriptions` (multipart, JSON, text, SSE).

use super::*;

fn audio_fixture(name: &str) -> Vec<u8> {
    std::fs::read(testkit::fixture("qwen2audio").join(name)).expect("fixture")
}

fn wav_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(audio_fixture("short_0p1s_16k.wav"))
}

fn audio_setup(options: ServerOptions, events: Vec<Event>) -> Setup {
    setup_info(options, info_with(false, true), events, false)
}

fn audio_message(data: &str, format: &str) -> Value {
    json!({"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": data, "format": format}},
        {"type": "text", "text": "what is this?"},
    ]}]})
}

#[tokio::test]
async fn audio_models_list_the_audio_modality() {
    let s = audio_setup(options(), hello_events());
    let (_, _, text) = send(&s.app, get("/v1/models")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["data"][0]["modalities"], json!(["text", "audio"]));
    assert_eq!(body["data"][0]["meta"]["audio"], true);
    let (_, _, text) = send(&s.app, get("/props")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["modalities"], json!({"vision": false, "audio": true}));
    assert_eq!(body["input_modalities"], json!(["text", "audio"]));
}

#[tokio::test]
async fn input_audio_reaches_the_engine_as_a_clip_in_prompt_order() {
    let s = audio_setup(options(), hello_events());
    let wav = wav_b64();
    let body = json!({"messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "first"},
            {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
        ]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": wav, "format": "WAV"}},
            {"type": "input_audio", "input_audio": {
                "data": base64::engine::general_purpose::STANDARD
                    .encode(audio_fixture("speech_a_16k_mono.flac")),
                "format": "flac"}},
        ]},
    ]});
    let (status, reply) = post_json(&s.app, "/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let seen = s.fake.seen.lock().expect("lock");
    let Prompt::Chat { messages, media } = &seen[0].prompt else {
        panic!("chat prompt expected");
    };
    assert_eq!(media.len(), 3);
    let clips: Vec<&mtmd::Audio> = media
        .iter()
        .map(|m| match m {
            MediaItem::Audio(a) => a,
            MediaItem::Image(_) => panic!("audio expected"),
        })
        .collect();
    assert_eq!(clips[0].id(), format!("{:016x}", clips[0].content_hash()));
    assert_eq!(clips[0].id(), clips[1].id(), "same bytes, same id");
    assert_ne!(clips[1].id(), clips[2].id());
    assert_eq!(clips[0].pcm().sample_rate, 16000);
    let MessageContent::Parts(parts) = &messages[0].content else {
        panic!("parts expected");
    };
    // The base64 is gone from the messages: a bare placeholder stays.
    assert_eq!(parts[1], ContentPart::input_audio("", ""));
}

#[tokio::test]
async fn bad_audio_parts_are_400_naming_the_part() {
    let s = audio_setup(options(), hello_events());
    for (data, format, code) in [
        ("@@not base64@@".to_owned(), "wav", "invalid_audio"),
        (
            base64::engine::general_purpose::STANDARD.encode(b"not audio at all"),
            "wav",
            "invalid_audio",
        ),
        (wav_b64(), "webm", "invalid_audio"),
    ] {
        let (status, body) =
            post_json(&s.app, "/v1/chat/completions", audio_message(&data, format)).await;
        let (got, message) = error_of(status, &body, 400);
        assert_eq!(got, code, "{message}");
        assert!(message.starts_with("messages[0].content[0]: "), "{message}");
    }
    // An image for an audio-only mmproj.
    let (status, body) = post_json(
        &s.app,
        "/v1/chat/completions",
        image_message(&format!("data:image/png;base64,{}", png_b64())),
    )
    .await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "no_vision");
    assert!(
        message.starts_with("messages[0].content[1]: this model takes no image input")
            && message.contains("audio encoder, not a vision one"),
        "{message}"
    );
    assert!(s.fake.seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn audio_longer_than_the_limit_is_400_naming_both_lengths() {
    let opts = ServerOptions {
        max_audio_seconds: 1.0,
        ..options()
    };
    let s = audio_setup(opts, hello_events());
    let long =
        base64::engine::general_purpose::STANDARD.encode(audio_fixture("speech_a_16k_mono.wav"));
    let (status, body) =
        post_json(&s.app, "/v1/chat/completions", audio_message(&long, "wav")).await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "audio_too_long");
    assert!(
        message.starts_with("messages[0].content[0]: the audio is ")
            && message.contains("longer than the limit of 1.00 s"),
        "{message}"
    );
    // The 0.1 s clip is within the limit.
    let (status, _) = post_json(
        &s.app,
        "/v1/chat/completions",
        audio_message(&wav_b64(), "wav"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

const BOUNDARY: &str = "----mtmdTestBoundary7MA4YWxk";

/// A multipart/form-data body: `(name, Some(file name) for a file, bytes)` per field.
fn multipart_body(fields: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file, bytes) in fields {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match file {
            Some(f) => body.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                     Content-Type: audio/wav\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn transcription(fields: &[(&str, Option<&str>, &[u8])]) -> HttpRequest<Body> {
    HttpRequest::post("/v1/audio/transcriptions")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(Body::from(multipart_body(fields)))
        .expect("request")
}

#[tokio::test]
async fn transcriptions_answer_json_by_default_and_text_on_request() {
    let s = audio_setup(options(), hello_events());
    let wav = audio_fixture("short_0p1s_16k.wav");
    let (status, headers, text) = send(
        &s.app,
        transcription(&[
            ("file", Some("clip.wav"), &wav),
            ("model", None, b"tiny"),
            ("language", None, b"en"),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["text"], "Hello");
    assert_eq!(
        body["usage"],
        json!({"type": "tokens", "input_tokens": 7, "output_tokens": 2, "total_tokens": 9})
    );
    {
        let seen = s.fake.seen.lock().expect("lock");
        let req = &seen[0];
        assert_eq!(req.sampling.temperature, 0.0, "greedy by default");
        assert_eq!(req.max_tokens, None);
        let Prompt::Chat { messages, media } = &req.prompt else {
            panic!("chat prompt expected");
        };
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].role, "user");
        assert_eq!(
            messages[0].content,
            MessageContent::Parts(vec![
                ContentPart::input_audio("", ""),
                ContentPart::text("Transcribe this audio."),
            ])
        );
        assert!(matches!(media.as_slice(), [MediaItem::Audio(a)] if a.pcm().sample_rate == 16000));
    }
    let (status, headers, text) = send(
        &s.app,
        transcription(&[
            ("response_format", None, b"text"),
            ("prompt", None, b"Write down the words."),
            ("temperature", None, b"0.7"),
            ("max_tokens", None, b"12"),
            ("file", Some("clip.wav"), &wav),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert_eq!(text, "Hello");
    {
        let seen = s.fake.seen.lock().expect("lock");
        assert_eq!(seen[1].sampling.temperature, 0.7);
        assert_eq!(seen[1].max_tokens, Some(12));
        let Prompt::Chat { messages, .. } = &seen[1].prompt else {
            panic!("chat prompt expected");
        };
        let MessageContent::Parts(parts) = &messages[0].content else {
            panic!("parts expected");
        };
        assert_eq!(parts[1], ContentPart::text("Write down the words."));
    }
    // Without /v1 too.
    let mut req = transcription(&[("file", Some("clip.wav"), &wav)]);
    *req.uri_mut() = "/audio/transcriptions".parse().expect("uri");
    let (status, _, _) = send(&s.app, req).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn transcription_stream_sends_deltas_then_done() {
    let s = audio_setup(options(), hello_events());
    let wav = audio_fixture("short_0p1s_16k.wav");
    let (status, headers, text) = send(
        &s.app,
        transcription(&[("file", Some("a.wav"), &wav), ("stream", None, b"true")]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let events: Vec<Value> = sse_data(&text)
        .iter()
        .map(|e| serde_json::from_str(e).expect("json event"))
        .collect();
    assert_eq!(
        events,
        vec![
            json!({"type": "transcript.text.delta", "delta": "Hel"}),
            json!({"type": "transcript.text.delta", "delta": "lo"}),
            json!({"type": "transcript.text.done", "text": "Hello", "usage":
                {"type": "tokens", "input_tokens": 7, "output_tokens": 2, "total_tokens": 9}}),
        ],
        "{text}"
    );
    // An engine error mid-stream is one error event, as for chat.
    let events = vec![
        Event::Started { prompt_tokens: 3 },
        Event::Text("a".into()),
        Event::Error(EngineError::Internal("kv exploded".into())),
    ];
    let s = audio_setup(options(), events);
    let (_, _, text) = send(
        &s.app,
        transcription(&[("file", Some("a.wav"), &wav), ("stream", None, b"true")]),
    )
    .await;
    let last: Value = serde_json::from_str(sse_data(&text).last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "internal_error");
}

#[tokio::test]
async fn transcription_errors_follow_the_table() {
    let wav = audio_fixture("short_0p1s_16k.wav");
    let s = audio_setup(options(), hello_events());
    let cases: Vec<(HttpRequest<Body>, u16, &str)> = vec![
        (
            transcription(&[("model", None, b"tiny")]),
            400,
            "invalid_request",
        ),
        (
            transcription(&[("file", Some("a.wav"), b"definitely not audio")]),
            400,
            "invalid_audio",
        ),
        (
            transcription(&[
                ("file", Some("a.wav"), &wav),
                ("response_format", None, b"srt"),
            ]),
            400,
            "invalid_request",
        ),
        (
            transcription(&[("file", Some("a.wav"), &wav), ("temperature", None, b"hot")]),
            400,
            "invalid_request",
        ),
        (
            transcription(&[("file", Some("a.wav"), &wav), ("model", None, b"whisper-1")]),
            404,
            "model_not_found",
        ),
        (
            post("/v1/audio/transcriptions", json!({"file": "x"}).to_string()),
            400,
            "invalid_request",
        ),
    ];
    for (req, want, code) in cases {
        let (status, _, text) = send(&s.app, req).await;
        let body: Value = serde_json::from_str(&text).expect("json error");
        let (got, message) = error_of(status, &body, want);
        assert_eq!(got, code, "{message}");
    }
    let (status, _, text) = send(
        &s.app,
        transcription(&[("file", Some("a.wav"), b"not audio")]),
    )
    .await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert!(
        error_of(status, &body, 400).1.starts_with("file: "),
        "{body}"
    );
    assert!(s.fake.seen.lock().expect("lock").is_empty());

    // A model without an audio encoder.
    for vision in [true, false] {
        let s = setup_with(options(), vision, hello_events(), false);
        let (status, _, text) = send(&s.app, transcription(&[("file", Some("a.wav"), &wav)])).await;
        let body: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(error_of(status, &body, 400).0, "no_audio");
    }

    // The body limit holds for uploads, and so does the audio length limit.
    let small = ServerOptions {
        max_body_bytes: 4096,
        ..options()
    };
    let s = audio_setup(small, hello_events());
    let big = audio_fixture("speech_a_16k_mono.wav");
    let (status, _, text) = send(&s.app, transcription(&[("file", Some("a.wav"), &big)])).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(error_of(status, &body, 413).0, "request_too_large");
    let short = ServerOptions {
        max_audio_seconds: 1.0,
        ..options()
    };
    let s = audio_setup(short, hello_events());
    let (status, _, text) = send(&s.app, transcription(&[("file", Some("a.wav"), &big)])).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "audio_too_long");
    assert!(message.contains("limit of 1.00 s"), "{message}");

    // The key guards the endpoint.
    let keyed = ServerOptions {
        api_key: Some("k".into()),
        ..options()
    };
    let s = audio_setup(keyed, hello_events());
    let (status, _, _) = send(&s.app, transcription(&[("file", Some("a.wav"), &wav)])).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
