//! Every way a request can fail, and the one table from failure to HTTP status, OpenAI error
//! `type` and a short snake_case `code`. Bodies are OpenAI's `{"error": {"message", "type",
//! "code"}}`, so the official clients raise their typed exceptions with our message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::backend::EngineError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not the JSON this endpoint takes.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// Well-formed JSON with a value we cannot serve (n > 1, an empty prompt, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// A media part that cannot be decoded; the message names the part.
    #[error("{0}")]
    InvalidImage(String),
    /// An audio part or upload that cannot be decoded; the message names the part.
    #[error("{0}")]
    InvalidAudio(String),
    /// Audio longer than `--max-audio-seconds`; the message names the part and both lengths.
    #[error("{0}")]
    AudioTooLong(String),
    /// An http(s) image URL that the policy refuses or whose fetch failed.
    #[error("{0}")]
    RemoteMedia(String),
    /// An image for a model without a vision encoder; the message names the part and why.
    #[error("{0}")]
    NoVision(String),
    /// Audio for a model without an audio encoder; the message names the part and why.
    #[error("{0}")]
    NoAudio(String),
    #[error("the model '{0}' does not exist (see GET /v1/models)")]
    ModelNotFound(String),
    #[error("invalid or missing API key (send 'Authorization: Bearer KEY')")]
    InvalidApiKey,
    #[error("request body too large (the limit is {0} MB; see --max-body-mb)")]
    RequestTooLarge(usize),
    /// The body did not arrive within `--body-timeout`.
    #[error("the request body did not arrive within {0} s (--body-timeout)")]
    BodyTimeout(String),
    /// The request was not answered within `--timeout` (its generation was stopped).
    #[error(
        "the request took longer than the server's limit of {0} s (--timeout); its generation was stopped"
    )]
    Timeout(String),
    /// `--parallel` requests run and `--max-queue` wait already.
    #[error(
        "the server is busy: {0} requests are already waiting for a slot (--max-queue); retry later"
    )]
    QueueFull(usize),
    #[error("Loading model")]
    Unavailable,
    /// The model failed to load; the server stays up to say why.
    #[error("the model failed to load: {0}")]
    LoadFailed(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("{0}")]
    Engine(EngineError),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The table: (HTTP status, OpenAI error type, our code).
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use ApiError::*;
        const BAD: StatusCode = StatusCode::BAD_REQUEST;
        const INVALID: &str = "invalid_request_error";
        match self {
            InvalidJson(_) => (BAD, INVALID, "invalid_json"),
            InvalidRequest(_) => (BAD, INVALID, "invalid_request"),
            InvalidImage(_) => (BAD, INVALID, "invalid_image"),
            InvalidAudio(_) => (BAD, INVALID, "invalid_audio"),
            AudioTooLong(_) => (BAD, INVALID, "audio_too_long"),
            RemoteMedia(_) => (BAD, INVALID, "remote_media_refused"),
            NoVision(_) => (BAD, INVALID, "no_vision"),
            NoAudio(_) => (BAD, INVALID, "no_audio"),
            ModelNotFound(_) => (StatusCode::NOT_FOUND, INVALID, "model_not_found"),
            InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
            ),
            RequestTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, "request_too_large"),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, INVALID, "request_timeout"),
            Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", "timeout"),
            QueueFull(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "queue_full",
            ),
            Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "unavailable",
            ),
            LoadFailed(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "model_load_failed",
            ),
            NotFound(_) => (StatusCode::NOT_FOUND, INVALID, "not_found"),
            Engine(EngineError::InvalidRequest(_)) => (BAD, INVALID, "invalid_request"),
            Engine(EngineError::Internal(_)) | Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
            ),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The `{"error": {...}}` object (also sent as one SSE event when a stream fails).
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.parts();
        json!({"error": {"message": self.to_string(), "type": kind, "code": code}})
    }
}

/// The refusal of a media part of `kind` ("image" / "audio") that the loaded model cannot
/// take; `what` names the part, `has_mmproj` tells whether any encoder is loaded.
pub fn unsupported_media(kind: mtmd::MediaKind, what: &str, has_mmproj: bool) -> ApiError {
    let (name, encoder, other) = match kind {
        mtmd::MediaKind::Image => ("image", "vision", "audio"),
        mtmd::MediaKind::Audio => ("audio", "audio", "vision"),
    };
    let message = if has_mmproj {
        format!(
            "{what}: this model takes no {name} input: its mmproj has {} {other} encoder, not \
             {} {encoder} one",
            article(other),
            article(encoder)
        )
    } else {
        format!(
            "{what}: this model takes no {name} input (no {encoder} encoder is loaded); start \
             the server with --mmproj FILE to send {name}{}",
            if name == "image" { "s" } else { "" }
        )
    };
    match kind {
        mtmd::MediaKind::Image => ApiError::NoVision(message),
        mtmd::MediaKind::Audio => ApiError::NoAudio(message),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::Engine(e)
    }
}

/// `d` in seconds as the messages show it ("30", "0.5").
pub fn seconds(d: std::time::Duration) -> String {
    d.as_secs_f64().to_string()
}

/// Seconds a client refused for a full queue is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        if matches!(self, ApiError::QueueFull(_)) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_documented_statuses() {
        let cases = [
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::NoVision("x".into()), 400, "no_vision"),
            (ApiError::NoAudio("x".into()), 400, "no_audio"),
            (ApiError::InvalidAudio("x".into()), 400, "invalid_audio"),
            (ApiError::AudioTooLong("x".into()), 400, "audio_too_long"),
            (ApiError::ModelNotFound("m".into()), 404, "model_not_found"),
            (ApiError::InvalidApiKey, 401, "invalid_api_key"),
            (ApiError::RequestTooLarge(1), 413, "request_too_large"),
            (ApiError::Unavailable, 503, "unavailable"),
            (ApiError::QueueFull(64), 503, "queue_full"),
            (ApiError::BodyTimeout("30".into()), 408, "request_timeout"),
            (ApiError::Timeout("600".into()), 504, "timeout"),
            (
                ApiError::Engine(EngineError::InvalidRequest("long".into())),
                400,
                "invalid_request",
            ),
            (
                ApiError::Engine(EngineError::Internal("boom".into())),
                500,
                "internal_error",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.body()["error"]["code"], code, "{err:?}");
            assert!(err.body()["error"]["message"].is_string());
        }
    }

    #[test]
    fn unsupported_media_names_the_part_and_the_cure() {
        use mtmd::MediaKind::{Audio, Image};
        let e = unsupported_media(Image, "messages[0].content[1]", false);
        assert_eq!(e.body()["error"]["code"], "no_vision");
        let m = e.to_string();
        assert!(
            m.starts_with("messages[0].content[1]: ") && m.contains("--mmproj"),
            "{m}"
        );
        let e = unsupported_media(Audio, "p", true);
        assert_eq!(e.body()["error"]["code"], "no_audio");
        assert_eq!(
            e.to_string(),
            "p: this model takes no audio input: its mmproj has a vision encoder, not an audio one"
        );
        let e = unsupported_media(Image, "p", true);
        assert!(
            e.to_string()
                .ends_with("an audio encoder, not a vision one"),
            "{e}"
        );
        assert!(
            unsupported_media(Audio, "p", false)
                .to_string()
                .contains("--mmproj")
        );
    }
}
