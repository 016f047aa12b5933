//! Refused requests: malformed bodies, bad or unsupported images, the body limit, unknown
//! models and the API key.

use super::*;

#[tokio::test]
async fn malformed_json_and_wrong_types_are_400() {
    let s = setup();
    let (status, _, text) = send(&s.app, post("/v1/chat/completions", "{\"messages\": [")).await;
    let body: Value = serde_json::from_str(&text).expect("error body is JSON");
    assert_eq!(error_of(status, &body, 400).0, "invalid_json");
    for bad in [
        json!({"model": "tiny"}),
        json!({"messages": "hi"}),
        json!({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
        json!({"messages": [{"role": "user", "content": "hi"}], "n": 2}),
        json!({"messages": []}),
    ] {
        let (status, body) = post_json(&s.app, "/v1/chat/completions", bad.clone()).await;
        error_of(status, &body, 400);
    }
    // No content-type header (curl -d) is still read as JSON.
    let req = HttpRequest::post("/v1/chat/completions")
        .body(Body::from(user("hi").to_string()))
        .expect("request");
    let (status, _, _) = send(&s.app, req).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_images_are_400_naming_the_part() {
    let s = setup();
    let corrupt = base64::engine::general_purpose::STANDARD.encode(b"\x89PNG\r\n\x1a\nnot really");
    for url in [
        "data:image/png;base64,%%%not-base64%%%".to_owned(),
        format!("data:image/png;base64,{corrupt}"),
        "data:audio/wav;base64,AAAA".to_owned(),
        "file:///etc/passwd".to_owned(),
    ] {
        let (status, body) = post_json(&s.app, "/v1/chat/completions", image_message(&url)).await;
        let (_, message) = error_of(status, &body, 400);
        assert!(message.starts_with("messages[0].content[1]: "), "{message}");
    }
    let (status, body) = post_json(
        &s.app,
        "/v1/chat/completions",
        image_message("http://example.com/a.png"),
    )
    .await;
    let (_, message) = error_of(status, &body, 400);
    assert!(message.contains("--allow-remote-media"), "{message}");
    assert!(
        s.fake.seen.lock().expect("lock").is_empty(),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn image_without_vision_names_mmproj() {
    let s = setup_with(options(), false, hello_events(), false);
    let url = format!("data:image/png;base64,{}", png_b64());
    let (status, body) = post_json(&s.app, "/v1/chat/completions", image_message(&url)).await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "no_vision");
    assert!(message.contains("--mmproj"), "{message}");
}

#[tokio::test]
async fn audio_without_an_audio_encoder_is_400_naming_the_part() {
    let body = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "listen"},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
    ]}]});
    // A vision mmproj, then no mmproj at all.
    for (vision, want) in [
        (true, "its mmproj has a vision encoder, not an audio one"),
        (false, "--mmproj"),
    ] {
        let s = setup_with(options(), vision, hello_events(), false);
        let (status, reply) = post_json(&s.app, "/v1/chat/completions", body.clone()).await;
        let (code, message) = error_of(status, &reply, 400);
        assert_eq!(code, "no_audio");
        assert!(
            message.starts_with("messages[0].content[1]: this model takes no audio input"),
            "{message}"
        );
        assert!(message.contains(want), "{message}");
        assert!(s.fake.seen.lock().expect("lock").is_empty());
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let opts = ServerOptions {
        max_body_bytes: 4096,
        ..options()
    };
    let s = setup_with(opts, true, hello_events(), false);
    let big = user(&"x".repeat(10_000));
    let (status, body) = post_json(&s.app, "/v1/chat/completions", big).await;
    assert_eq!(error_of(status, &body, 413).0, "request_too_large");
    // Without a Content-Length (chunked upload) the limit holds too.
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 1000]))),
    );
    let req = HttpRequest::post("/v1/completions")
        .body(Body::from_stream(chunks))
        .expect("request");
    let (status, _, text) = send(&s.app, req).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    error_of(status, &body, 413);
}

#[tokio::test]
async fn unknown_model_is_404_and_file_names_are_accepted() {
    let s = setup();
    for (model, want) in [
        ("gpt-4o", 404),
        ("tiny", 200),
        ("tiny-model.gguf", 200),
        ("tiny-model", 200),
        ("", 200),
    ] {
        let mut body = user("hi");
        body["model"] = json!(model);
        let (status, body) = post_json(&s.app, "/v1/chat/completions", body).await;
        assert_eq!(status.as_u16(), want, "{model}: {body}");
        if want == 404 {
            assert_eq!(error_of(status, &body, 404).0, "model_not_found");
        }
    }
    let (status, body) = post_json(
        &s.app,
        "/v1/completions",
        json!({"prompt": "x", "model": "nope"}),
    )
    .await;
    error_of(status, &body, 404);
}

#[tokio::test]
async fn api_key_is_required_where_it_should_be() {
    let opts = ServerOptions {
        api_key: Some("sekret".into()),
        ..options()
    };
    let s = setup_with(opts, true, hello_events(), false);
    let (status, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    assert_eq!(error_of(status, &body, 401).0, "invalid_api_key");
    let wrong = HttpRequest::get("/v1/models")
        .header("authorization", "Bearer nope")
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = send(&s.app, wrong).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = send(&s.app, get("/props")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let right = HttpRequest::get("/v1/models")
        .header("authorization", "Bearer sekret")
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = send(&s.app, right).await;
    assert_eq!(status, StatusCode::OK);
    for open in ["/health", "/metrics", "/"] {
        let (status, _, _) = send(&s.app, get(open)).await;
        assert_eq!(status, StatusCode::OK, "{open}");
    }
}
