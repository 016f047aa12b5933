//! The endpoints that describe the server: the chat page, `/health`, `/metrics`,
//! `/v1/models`, `/props`, and the JSON 404 of unknown routes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::api_error::ApiError;
use crate::backend::ModelInfo;
use crate::metrics_text;
use crate::openai;

pub(super) async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

pub(super) async fn index() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        crate::web::index_html(),
    )
}

pub(super) async fn health(State(state): State<AppState>) -> Response {
    match state.backend() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => {
            // llama.cpp's shape (numeric code), which health probes written for it expect.
            let body = json!({"error": {"code": 503, "message": e.to_string(),
                                        "type": "unavailable_error"}});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let backend = state.backend().ok();
    let engine = backend.as_ref().map(|b| b.metrics());
    let slots = backend.as_ref().map_or(0, |b| b.info().n_slots);
    let text = metrics_text::render(state.http_counters(), engine, slots);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// One `/v1/models` entry. The input modalities are under `modalities` (and the same list
/// under `input_modalities`, the name some clients look for).
fn model_entry(info: &ModelInfo) -> Value {
    json!({
        "id": info.id,
        "object": "model",
        "created": info.created,
        "owned_by": "mtmd-rs",
        "modalities": info.modalities(),
        "input_modalities": info.modalities(),
        "meta": {
            "n_ctx": info.n_ctx,
            "n_ctx_train": info.n_ctx_train,
            "n_slots": info.n_slots,
            "kv_pool_cells": info.kv_pool_cells,
            "n_vocab": info.n_vocab,
            "n_params": info.n_params,
            "size": info.size_bytes,
            "device": info.device,
            "vision": info.vision,
            "audio": info.audio,
        },
    })
}

pub(super) async fn models(State(state): State<AppState>) -> Result<Response, ApiError> {
    let backend = state.backend()?;
    Ok(Json(json!({"object": "list", "data": [model_entry(backend.info())]})).into_response())
}

pub(super) async fn model_by_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let backend = state.backend()?;
    let info = backend.info();
    if !openai::model_matches(&id, info) {
        return Err(ApiError::ModelNotFound(id));
    }
    Ok(Json(model_entry(info)).into_response())
}

pub(super) async fn props(State(state): State<AppState>) -> Result<Response, ApiError> {
    let backend = state.backend()?;
    let info = backend.info();
    let defaults = llm::sampling::SamplingParams::default();
    Ok(Json(json!({
        "model": info.id,
        "model_alias": info.id,
        "model_path": info.model_path,
        "mmproj_path": info.mmproj_path,
        "n_ctx": info.n_ctx,
        "n_ctx_train": info.n_ctx_train,
        "total_slots": info.n_slots,
        "n_slots": info.n_slots,
        "kv_pool_cells": info.kv_pool_cells,
        "n_vocab": info.n_vocab,
        "device": info.device,
        "modalities": {"vision": info.vision, "audio": info.audio},
        "input_modalities": info.modalities(),
        "chat_template": info.chat_template,
        "default_generation_settings": {
            "n_ctx": info.n_ctx,
            "params": {
                "temperature": defaults.temperature,
                "top_k": defaults.top_k,
                "top_p": defaults.top_p,
                "min_p": defaults.min_p,
                "repeat_penalty": defaults.repeat_penalty,
                "max_tokens": null,
            },
        },
        "build_info": format!("mtmd-rs {}", env!("CARGO_PKG_VERSION")),
    }))
    .into_response())
}
