//! The server held under abuse, at the router: the bounded queue (503 + Retry-After), the
//! per-request deadline, the body-read timeout, the clamp of `max_tokens`, the API key
//! compared in constant time, claimed sizes that allocate nothing, and media URLs that never
//! read a file.

use std::time::Instant;

use super::super::middleware::same_key;
use super::*;

fn stream_body(text: &str) -> Value {
    let mut body = user(text);
    body["stream"] = json!(true);
    body
}

/// Starts a streamed chat and returns its response once its headers are in (the body stays
/// unread: the request keeps its place).
async fn open_stream(app: &axum::Router) -> axum::response::Response {
    let call = app
        .clone()
        .oneshot(post("/v1/chat/completions", stream_body("hi").to_string()));
    within("stream response", call).await.expect("infallible")
}

#[tokio::test]
async fn a_full_queue_is_503_with_retry_after_and_frees_up() {
    // 2 slots + 1 waiting: the fourth concurrent request is refused.
    let opts = ServerOptions {
        max_queue: 1,
        ..options()
    };
    let held = vec![Event::Started { prompt_tokens: 3 }];
    let s = setup_with(opts, false, held, true);
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = open_stream(&s.app).await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
    }
    for path in ["/v1/chat/completions", "/v1/completions"] {
        let body = json!({"messages": [{"role": "user", "content": "hi"}], "prompt": "hi"});
        let (status, headers, text) = send(&s.app, post(path, body.to_string())).await;
        let body: Value = serde_json::from_str(&text).expect("json");
        let (code, message) = error_of(status, &body, 503);
        assert_eq!(code, "queue_full");
        assert_eq!(body["error"]["type"], "unavailable_error");
        assert!(message.contains("--max-queue"), "{message}");
        assert_eq!(headers["retry-after"], "1");
    }
    assert_eq!(
        s.fake.seen.lock().expect("lock").len(),
        3,
        "refused before submit"
    );
    // A client that leaves gives its place back.
    drop(open.pop());
    let response = open_stream(&s.app).await;
    assert_eq!(response.status(), StatusCode::OK);
}

fn timed(limit: Duration) -> ServerOptions {
    ServerOptions {
        request_timeout: Some(limit),
        ..options()
    }
}

#[tokio::test]
async fn the_deadline_stops_a_generation_with_504_or_a_final_error_event() {
    let limit = Duration::from_millis(300);
    let held = vec![Event::Started { prompt_tokens: 3 }, Event::Text("a".into())];

    // Not streamed: 504 once the deadline passes, and the engine's channel is closed.
    let s = setup_with(timed(limit), false, held.clone(), true);
    let start = Instant::now();
    let (status, body) = post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    let (code, message) = error_of(status, &body, 504);
    assert_eq!(code, "timeout");
    assert!(message.contains("0.3 s (--timeout)"), "{message}");
    let took = start.elapsed();
    assert!(took >= limit && took < limit * 10, "{took:?}");
    let tx = s.fake.senders.lock().expect("lock")[0].clone();
    assert!(tx.is_closed(), "the generation must be cancelled");

    // Streamed: the pieces so far, then one error event, no [DONE]; the channel is closed.
    let s = setup_with(timed(limit), false, held, true);
    let (status, _, text) = send(
        &s.app,
        post("/v1/chat/completions", stream_body("hi").to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = sse_data(&text);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{text}");
    let last: Value = serde_json::from_str(events.last().expect("events")).expect("json");
    assert_eq!(last["error"]["code"], "timeout", "{text}");
    assert!(
        events.iter().any(|e| e.contains("\"content\":\"a\"")),
        "{text}"
    );
    let tx = s.fake.senders.lock().expect("lock")[0].clone();
    assert!(tx.is_closed(), "the generation must be cancelled");

    // Streamed, but the request never left the queue: a plain 504 (no stream started).
    let s = setup_with(timed(limit), false, Vec::new(), true);
    let (status, _, text) = send(
        &s.app,
        post("/v1/chat/completions", stream_body("hi").to_string()),
    )
    .await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(error_of(status, &body, 504).0, "timeout");
}

#[tokio::test]
async fn a_trickled_body_is_408_and_never_reaches_the_engine() {
    let opts = ServerOptions {
        body_timeout: Some(Duration::from_millis(300)),
        ..options()
    };
    let s = setup_with(opts, false, hello_events(), false);
    // One byte, then nothing: the client never finishes its body.
    let first = futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from("{"))]);
    let stalled = futures_util::StreamExt::chain(first, futures_util::stream::pending());
    let req = HttpRequest::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from_stream(stalled))
        .expect("request");
    let start = Instant::now();
    let (status, _, text) = send(&s.app, req).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    let (code, message) = error_of(status, &body, 408);
    assert_eq!(code, "request_timeout");
    assert!(message.contains("--body-timeout"), "{message}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(s.fake.seen.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn max_tokens_beyond_the_context_is_clamped_and_reported() {
    // n_ctx 512, 7 prompt tokens: room for 505.
    for stream in [false, true] {
        for (asked, want) in [(Some(10_000), Some("505")), (Some(5), None), (None, None)] {
            let s = setup();
            let mut body = user("hi");
            body["stream"] = json!(stream);
            if let Some(m) = asked {
                body["max_tokens"] = json!(m);
            }
            let (status, headers, _) =
                send(&s.app, post("/v1/chat/completions", body.to_string())).await;
            assert_eq!(status, StatusCode::OK);
            let got = headers
                .get("x-max-tokens-clamped")
                .map(|v| v.to_str().expect("ascii"));
            assert_eq!(got, want, "stream {stream}, max_tokens {asked:?}");
        }
    }
}

#[test]
fn the_key_comparison_refuses_every_wrong_key_and_takes_the_right_one() {
    let key = b"sk-0123456789abcdef";
    assert!(same_key(key, key));
    // Every length from empty to twice the key, made of the key's own bytes repeated (so a
    // compare that stopped at the shorter length would accept the prefixes).
    for len in 0..=2 * key.len() {
        let guess: Vec<u8> = key.iter().cycle().take(len).copied().collect();
        assert_eq!(same_key(&guess, key), len == key.len(), "length {len}");
    }
    // One byte wrong, at every position.
    for i in 0..key.len() {
        let mut guess = key.to_vec();
        guess[i] ^= 1;
        assert!(!same_key(&guess, key), "byte {i}");
    }
    assert!(!same_key(b"", b""), "an empty key never matches");
}

#[tokio::test]
async fn wrong_keys_of_every_length_are_401_and_the_right_one_passes() {
    let key = "sekret-key";
    let opts = ServerOptions {
        api_key: Some(key.into()),
        ..options()
    };
    let s = setup_with(opts, false, hello_events(), false);
    let with_key = |k: &str| {
        HttpRequest::get("/v1/models")
            .header("authorization", format!("Bearer {k}"))
            .body(Body::empty())
            .expect("request")
    };
    for len in 1..=2 * key.len() {
        let guess: String = key.chars().cycle().take(len).collect();
        let (status, _, _) = send(&s.app, with_key(&guess)).await;
        let want = if guess == key { 200 } else { 401 };
        assert_eq!(status.as_u16(), want, "{guess}");
    }
    let (status, _, _) = send(&s.app, with_key("sekret-kez")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn file_urls_and_paths_are_refused_and_never_read() {
    // A real, decodable image on disk: a server that read it would answer 200.
    let dir = std::env::temp_dir().join(format!("mtmd-file-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let png = dir.join("cat.png");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/gemma3/tiny.png"
    );
    std::fs::copy(fixture, &png).expect("copy");
    let path = png.display().to_string();
    let urls = [
        format!("file://{path}"),
        format!("FILE://{path}"),
        format!("file:{path}"),
        format!("file://localhost{path}"),
        path.clone(),
        format!("{}/./cat.png", dir.display()),
        "../../tests/fixtures/gemma3/tiny.png".into(),
        "tests/fixtures/gemma3/tiny.png".into(),
        "~/cat.png".into(),
        "/etc/passwd".into(),
        "\\\\server\\share\\cat.png".into(),
        "C:\\images\\cat.png".into(),
    ];
    let s = setup();
    for url in &urls {
        let (status, body) = post_json(&s.app, "/v1/chat/completions", image_message(url)).await;
        let (code, message) = error_of(status, &body, 400);
        assert_eq!(code, "invalid_image", "{url}: {message}");
        assert!(message.starts_with("messages[0].content[1]: "), "{message}");
    }
    assert!(s.fake.seen.lock().expect("lock").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// CRC-32 (IEEE) as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG that is only a signature and a header claiming `side` x `side` RGB pixels.
fn png_claiming(side: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(side.to_be_bytes());
    ihdr.extend(side.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    png
}

#[tokio::test]
async fn an_image_claiming_huge_dimensions_is_refused_before_decoding() {
    let s = setup();
    let b64 = base64::engine::general_purpose::STANDARD.encode(png_claiming(100_000));
    let start = Instant::now();
    let url = format!("data:image/png;base64,{b64}");
    let (status, body) = post_json(&s.app, "/v1/chat/completions", image_message(&url)).await;
    let (code, message) = error_of(status, &body, 400);
    assert_eq!(code, "invalid_image");
    assert!(message.contains("limit"), "{message}");
    // 100000² RGB would be 30 GB: refused from the header, at once.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(s.fake.seen.lock().expect("lock").is_empty());
}
