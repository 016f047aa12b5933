//! The informational endpoints (models, health, props, metrics, the page), CORS and 404s.

use super::*;

#[tokio::test]
async fn models_list_the_modalities() {
    let s = setup();
    let (status, _, text) = send(&s.app, get("/v1/models")).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["object"], "list");
    let entry = &body["data"][0];
    assert_eq!(entry["id"], "tiny");
    assert_eq!(entry["object"], "model");
    assert_eq!(entry["owned_by"], "mtmd-rs");
    assert_eq!(entry["modalities"], json!(["text", "image"]));
    assert_eq!(entry["input_modalities"], json!(["text", "image"]));
    let (status, _, _) = send(&s.app, get("/v1/models/tiny")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = send(&s.app, get("/v1/models/other")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text_only = setup_with(options(), false, hello_events(), false);
    let (_, _, text) = send(&text_only.app, get("/v1/models")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["data"][0]["modalities"], json!(["text"]));
}

#[tokio::test]
async fn health_is_503_while_loading_then_200() {
    let state = AppState::new(options());
    let app = router(state.clone());
    let (status, _, text) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}})
    );
    let (status, body) = post_json(&app, "/v1/chat/completions", user("hi")).await;
    error_of(status, &body, 503);
    let (status, _, _) = send(&app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK, "metrics answer while loading");
    let fake = Arc::new(Fake {
        info: info(false),
        events: hello_events(),
        hold: false,
        seen: Mutex::new(Vec::new()),
        senders: Mutex::new(Vec::new()),
    });
    state.set_backend(fake);
    let (status, _, text) = send(&app, get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_str::<Value>(&text).expect("json"),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn props_describe_the_model() {
    let s = setup();
    let (status, _, text) = send(&s.app, get("/props")).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["n_ctx"], 512);
    assert_eq!(body["total_slots"], 2);
    assert_eq!(body["modalities"], json!({"vision": true, "audio": false}));
    assert_eq!(body["chat_template"], "{{ messages }}");
    assert!(
        body["build_info"]
            .as_str()
            .expect("build")
            .starts_with("mtmd-rs")
    );
}

#[tokio::test]
async fn metrics_expose_http_and_engine_counters() {
    let s = setup();
    post_json(&s.app, "/v1/chat/completions", user("hi")).await;
    post_json(&s.app, "/v1/chat/completions", json!({"bad": 1})).await;
    let (status, headers, text) = send(&s.app, get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/plain")
    );
    assert!(
        text.contains("mtmd_http_requests_total{path=\"/v1/chat/completions\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("mtmd_http_requests_total{path=\"/v1/chat/completions\",status=\"400\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE mtmd_images_encoded_total counter"));
    assert!(text.contains("mtmd_images_encoded_total 2\n"));
    assert!(text.contains("mtmd_queue_depth 1\n"));
    assert!(text.contains("mtmd_slots_total 2\n"));
}

#[tokio::test]
async fn cors_preflight_and_header() {
    let s = setup_with(
        ServerOptions {
            api_key: Some("k".into()),
            ..options()
        },
        true,
        hello_events(),
        false,
    );
    let preflight = HttpRequest::options("/v1/chat/completions")
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .body(Body::empty())
        .expect("request");
    let (status, headers, _) = send(&s.app, preflight).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("m")
            .contains("POST")
    );
    let (_, headers, _) = send(&s.app, get("/health")).await;
    assert_eq!(headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let s = setup();
    let (status, _, text) = send(&s.app, get("/v2/nothing")).await;
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(error_of(status, &body, 404).0, "not_found");
}

#[tokio::test]
async fn index_serves_the_page() {
    let s = setup();
    let (status, headers, text) = send(&s.app, get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/html")
    );
    assert!(text.contains("<html") || text.contains("<!doctype") || text.contains("<!DOCTYPE"));
}
