//! Entry points for the fuzz targets in `fuzz/` (not an API): the request conversions a
//! client's bytes go through before anything reaches the engine, run exactly as the handlers
//! run them, with remote media off (no network) and a small media budget.

use std::sync::OnceLock;

use axum::extract::{FromRequest, Multipart};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use crate::api_error::ApiError;
use crate::backend::{ModelInfo, Prompt};
use crate::media_input::MediaPolicy;
use crate::openai::{ChatRequest, CompletionRequest};
use crate::routes::{AppState, ServerOptions};

/// The boundary [`transcription_form`] declares in the request's Content-Type.
pub const BOUNDARY: &str = "XFUZZBOUNDARY";

const MAX_MEDIA_BYTES: usize = 1 << 20;
const MAX_AUDIO_SECONDS: f64 = 30.0;

fn model_info() -> ModelInfo {
    ModelInfo {
        id: "fuzz".into(),
        created: 0,
        n_ctx: 4096,
        n_ctx_train: 4096,
        n_slots: 1,
        kv_pool_cells: 4096,
        n_vocab: 32000,
        n_params: 0,
        size_bytes: 0,
        device: "cpu".into(),
        vision: true,
        audio: true,
        chat_template: None,
        model_path: "/models/fuzz.gguf".into(),
        mmproj_path: Some("/models/mmproj-fuzz.gguf".into()),
    }
}

fn policy() -> MediaPolicy {
    MediaPolicy {
        allow_remote: false,
        max_bytes: MAX_MEDIA_BYTES,
        max_audio_seconds: MAX_AUDIO_SECONDS,
    }
}

/// Every error must map to a response (status, JSON body) without panicking.
fn respond<T>(result: Result<T, ApiError>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            let _ = e.into_response();
            false
        }
    }
}

/// A `/v1/chat/completions` body: JSON -> typed request (media decoded) -> the messages
/// rendered through the ChatML template. True when the request is accepted.
pub fn chat_request(body: &[u8]) -> bool {
    let info = model_info();
    let result = serde_json::from_slice::<ChatRequest>(body)
        .map_err(|e| ApiError::InvalidJson(e.to_string()))
        .and_then(|req| {
            req.common.check_model(&info)?;
            let _ = (req.common.stream(), req.common.include_usage());
            req.into_request(&info, &policy())
        });
    if let Ok(request) = &result
        && let Prompt::Chat { messages, .. } = &request.prompt
    {
        let template = llm::chat::ChatTemplate::builtin("chatml").expect("chatml is built in");
        let _ = template.render(messages, true);
    }
    respond(result)
}

/// A `/v1/completions` body. True when the request is accepted.
pub fn completion_request(body: &[u8]) -> bool {
    let info = model_info();
    respond(
        serde_json::from_slice::<CompletionRequest>(body)
            .map_err(|e| ApiError::InvalidJson(e.to_string()))
            .and_then(|req| {
                req.common.check_model(&info)?;
                req.into_request()
            }),
    )
}

/// A `/v1/audio/transcriptions` multipart body (boundary [`BOUNDARY`]): the form read,
/// validated and its audio decoded as the handler does. True when accepted.
pub fn transcription_form(body: &[u8]) -> bool {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    let runtime = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    });
    let state = AppState::new(ServerOptions {
        api_key: None,
        max_body_bytes: MAX_MEDIA_BYTES,
        allow_remote_media: false,
        max_audio_seconds: MAX_AUDIO_SECONDS,
        log_requests: false,
        ..ServerOptions::default()
    });
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/audio/transcriptions")
        .header(
            CONTENT_TYPE,
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(axum::body::Body::from(body.to_vec()))
        .expect("a valid request");
    runtime.block_on(async {
        let multipart = match Multipart::from_request(request, &()).await {
            Ok(m) => m,
            Err(_) => return false,
        };
        respond(crate::routes::check_transcription_form(&state, multipart).await)
    })
}
