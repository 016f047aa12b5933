//! Chat and text completions: JSON and SSE shapes, engine errors, what the engine sees,
//! cancellation by dropping the response.

use super::*;

#[tokio::test]
async fn chat_completion_has_openai_shape() {
    let s = setup();
    let (status, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert!(body["created"].is_u64());
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["choices"][0]["index"], 0);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 2);
    assert_eq!(body["usage"]["total_tokens"], 9);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 1);
    assert_eq!(body["timings"]["predicted_ms"], 40.0);
    // llama.cpp's path without /v1 too.
    let (status, _) = post_json(&s.app, "/chat/completions", user("hi")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn length_finish_is_reported() {
    let events = vec![Event::Text("a".into()), done(3, 1, FinishReason::Length)];
    let s = setup_with(options(), false, events, false);
    let (_, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    assert_eq!(body["choices"][0]["finish_reason"], "length");
}

#[tokio::test]
async fn chat_stream_sends_role_pieces_finish_usage_and_done() {
    let s = setup();
    let mut body = user("hi");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, text) =
        send(&s.app, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let events = sse_data(&text);
    assert_eq!(events.len(), 6, "{text}");
    assert_eq!(events[5], "[DONE]");
    let chunks: Vec<Value> = events[..5]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json chunk"))
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], chunks[0]["id"]);
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "Hel");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "lo");
    assert!(chunks[2]["choices"][0]["finish_reason"].is_null());
    assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[4]["choices"], json!([]));
    assert_eq!(chunks[4]["usage"]["total_tokens"], 9);
}

#[tokio::test]
async fn stream_without_include_usage_has_no_usage_chunk() {
    let s = setup();
    let mut body = user("hi");
    body["stream"] = json!(true);
    let (_, _, text) = send(&s.app, post("/v1/chat/completions", body.to_string())).await;
    let events = sse_data(&text);
    assert_eq!(events.len(), 5, "{text}");
    assert!(!text.contains("\"usage\""));
}

#[tokio::test]
async fn engine_error_mid_stream_is_one_error_event() {
    let events = vec![
        Event::Started { prompt_tokens: 3 },
        Event::Text("a".into()),
        Event::Error(EngineError::Internal("kv exploded".into())),
    ];
    let s = setup_with(options(), false, events, false);
    let mut body = user("hi");
    body["stream"] = json!(true);
    let (status, _, text) = send(&s.app, post("/v1/chat/completions", body.to_string())).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&text);
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "internal_error");
    assert!(!text.contains("[DONE]"));
}

#[tokio::test]
async fn engine_errors_map_to_400_and_500() {
    for (err, want, stream) in [
        (
            EngineError::InvalidRequest("prompt too long".into()),
            400,
            false,
        ),
        (
            EngineError::InvalidRequest("prompt too long".into()),
            400,
            true,
        ),
        (EngineError::Internal("boom".into()), 500, false),
        (EngineError::Internal("boom".into()), 500, true),
    ] {
        let s = setup_with(options(), false, vec![Event::Error(err)], false);
        let mut body = user("hi");
        body["stream"] = json!(stream);
        let (status, body) = post_json(&s.app, "/v1/chat/completions", body).await;
        error_of(status, &body, want);
    }
}

#[tokio::test]
async fn completions_plain_and_streamed() {
    let s = setup();
    let (status, body) = post_json(
        &s.app,
        "/v1/completions",
        json!({"prompt": "Once", "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "Hello");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 2);
    match &s.fake.seen.lock().expect("lock")[0] {
        Request {
            prompt: Prompt::Text(p),
            max_tokens,
            ..
        } => {
            assert_eq!(p, "Once");
            assert_eq!(*max_tokens, Some(4));
        }
        other => panic!("unexpected request {other:?}"),
    }
    let req = post(
        "/completions",
        json!({"prompt": ["Once"], "stream": true}).to_string(),
    );
    let (status, _, text) = send(&s.app, req).await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&events[0]).expect("json");
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "Hel");
}

#[tokio::test]
async fn the_engine_sees_mapped_sampling_and_decoded_images() {
    let s = setup();
    let url = format!("data:image/png;base64,{}", png_b64());
    let body = json!({
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                {"type": "text", "text": "and"},
                {"type": "image_url", "image_url": {"url": png_b64()}},
            ]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [
                {"type": "text", "text": "again"},
                {"type": "image_url", "image_url": {"url": url}},
            ]},
        ],
        "temperature": 0.0, "top_p": 0.9, "top_k": 5, "min_p": 0.0, "seed": 7,
        "max_tokens": 16, "stop": ["</s>", "END"],
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "repeat_penalty": 1.3,
        "logit_bias": {}, "user": "ignored",
    });
    let (status, reply) = post_json(&s.app, "/v1/chat/completions", body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let seen = s.fake.seen.lock().expect("lock");
    let req = &seen[0];
    assert_eq!(req.sampling.temperature, 0.0);
    assert_eq!(
        (req.sampling.top_p, req.sampling.top_k, req.sampling.min_p),
        (0.9, 5, 0.0)
    );
    assert_eq!(req.sampling.seed, Some(7));
    assert_eq!(req.sampling.presence_penalty, 0.1);
    assert_eq!(req.sampling.frequency_penalty, 0.2);
    assert_eq!(req.sampling.repeat_penalty, 1.3);
    assert_eq!(req.max_tokens, Some(16));
    assert_eq!(req.stop, vec!["</s>".to_owned(), "END".to_owned()]);
    let Prompt::Chat { messages, media } = &req.prompt else {
        panic!("chat prompt expected");
    };
    assert_eq!(messages.len(), 4);
    assert_eq!(media.len(), 3);
    let images: Vec<&mtmd::Bitmap> = media
        .iter()
        .map(|m| match m {
            MediaItem::Image(b) => b,
            MediaItem::Audio(_) => panic!("image expected"),
        })
        .collect();
    for img in &images {
        assert_eq!(img.id(), format!("{:016x}", img.content_hash()));
        assert_eq!(img.id().len(), 16);
    }
    assert_eq!(images[0].id(), images[2].id(), "same bytes, same id");
    let MessageContent::Parts(parts) = &messages[1].content else {
        panic!("parts expected");
    };
    assert_eq!(parts[0], ContentPart::image());
    assert_eq!(parts[1], ContentPart::text("and"));
    assert_eq!(parts[2], ContentPart::image());
    assert_eq!(messages[0].content, MessageContent::Text("be brief".into()));
}

/// Dropping the response (a client that hangs up) drops the receiver: the engine's cancel.
#[tokio::test]
async fn dropping_the_response_cancels_the_request() {
    let events = vec![Event::Started { prompt_tokens: 3 }, Event::Text("a".into())];
    for stream in [true, false] {
        let s = setup_with(options(), false, events.clone(), true);
        let mut body = user("hi");
        body["stream"] = json!(stream);
        if stream {
            let call = s
                .app
                .clone()
                .oneshot(post("/v1/chat/completions", body.to_string()));
            let response = within("response", call).await.expect("infallible");
            assert_eq!(response.status(), StatusCode::OK);
            let mut body = response.into_body();
            let first = within("first frame", body.frame())
                .await
                .expect("a frame")
                .expect("ok");
            assert!(first.into_data().is_ok());
            let tx = s.fake.senders.lock().expect("lock")[0].clone();
            assert!(!tx.is_closed(), "still streaming");
            drop(body);
            assert!(tx.is_closed(), "dropping the stream must drop the receiver");
        } else {
            let app = s.app.clone();
            let call = tokio::spawn(async move {
                app.oneshot(post("/v1/chat/completions", body.to_string()))
                    .await
            });
            // Wait until the request reached the engine, then abandon it.
            for _ in 0..200 {
                if !s.fake.senders.lock().expect("lock").is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let tx = s.fake.senders.lock().expect("lock")[0].clone();
            assert!(!tx.is_closed());
            call.abort();
            let _ = within("aborted call", call).await;
            assert!(
                tx.is_closed(),
                "an abandoned request must drop its receiver"
            );
        }
    }
}

// Audio: `input_audio` parts and `/v1/audio/transcriptions`.
