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
    /// An http(s) image URL that the policy refuses or whose fetch failed.
    #[error("{0}")]
    RemoteMedia(String),
    #[error(
        "this model takes no image input (no vision encoder is loaded); start the server with \
         --mmproj FILE to send images"
    )]
    NoVision,
    #[error("this model takes no audio input (no audio encoder is loaded)")]
    NoAudio,
    #[error("the model '{0}' does not exist (see GET /v1/models)")]
    ModelNotFound(String),
    #[error("invalid or missing API key (send 'Authorization: Bearer KEY')")]
    InvalidApiKey,
    #[error("request body too large (the limit is {0} MB; see --max-body-mb)")]
    RequestTooLarge(usize),
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
            RemoteMedia(_) => (BAD, INVALID, "remote_media_refused"),
            NoVision => (BAD, INVALID, "no_vision"),
            NoAudio => (BAD, INVALID, "no_audio"),
            ModelNotFound(_) => (StatusCode::NOT_FOUND, INVALID, "model_not_found"),
            InvalidApiKey => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
            ),
            RequestTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID, "request_too_large"),
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

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        ApiError::Engine(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_documented_statuses() {
        let cases = [
            (ApiError::InvalidJson("x".into()), 400, "invalid_json"),
            (ApiError::NoVision, 400, "no_vision"),
            (ApiError::NoAudio, 400, "no_audio"),
            (ApiError::ModelNotFound("m".into()), 404, "model_not_found"),
            (ApiError::InvalidApiKey, 401, "invalid_api_key"),
            (ApiError::RequestTooLarge(1), 413, "request_too_large"),
            (ApiError::Unavailable, 503, "unavailable"),
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
        assert!(ApiError::NoVision.to_string().contains("--mmproj"));
    }
}
