//! `POST /v1/audio/transcriptions` in OpenAI's wire format: a `multipart/form-data` body with
//! the audio `file` (WAV, FLAC or MP3), `model`, `prompt`, `response_format` (`json` or
//! `text`), `temperature` and `stream`. The clip goes to the model as one user message of its
//! chat template (the audio, then `prompt` or [`DEFAULT_INSTRUCTION`]); the answer comes back
//! as `{"text": ...}`, as plain text, or (`stream=true`) as server-sent events
//! `{"type":"transcript.text.delta","delta":...}` ... `{"type":"transcript.text.done",...}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{Method, StatusCode, header};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use llm::chat::{ChatMessage, ContentPart, MessageContent};
use llm::sampling::SamplingParams;
use serde_json::{Value, json};

use super::AppState;
use super::generate::{Origin, engine_vanished, finished};
use super::middleware::Tokens;
use super::sse::{Wire, data, sse_response};
use crate::api_error::{ApiError, unsupported_media};
use crate::backend::{Backend, Event, MediaItem, Prompt, Request, Usage};
use crate::media_input::decode_audio;
use crate::openai::{Finished, model_matches};

/// What the model is asked when the form has no `prompt`.
pub(super) const DEFAULT_INSTRUCTION: &str = "Transcribe this audio.";

/// How the transcript is sent back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `{"text": "...", "usage": {...}}`
    Json,
    /// The transcript alone, `text/plain`.
    Text,
}

/// The fields of the form this endpoint uses (others, e.g. `language`, are ignored).
#[derive(Debug, Default)]
struct Form {
    file: Option<Vec<u8>>,
    model: Option<String>,
    prompt: Option<String>,
    response_format: Option<String>,
    temperature: Option<String>,
    stream: Option<String>,
    /// Extension (not in OpenAI's API): bound of the transcript, in tokens.
    max_tokens: Option<String>,
}

fn multipart_error(state: &AppState, status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::RequestTooLarge(state.options().max_body_bytes >> 20)
    } else {
        ApiError::InvalidRequest(format!("could not read the multipart form: {text}"))
    }
}

fn field_error(state: &AppState, e: MultipartError) -> ApiError {
    multipart_error(state, e.status(), e.body_text())
}

async fn text_of(state: &AppState, field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let bytes = field.bytes().await.map_err(|e| field_error(state, e))?;
    String::from_utf8(bytes.to_vec())
        .map(|s| s.trim().to_owned())
        .map_err(|_| ApiError::InvalidRequest(format!("the form field '{name}' is not UTF-8 text")))
}

async fn read_form(state: &AppState, mut multipart: Multipart) -> Result<Form, ApiError> {
    let mut form = Form::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| field_error(state, e))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "file" => {
                if form.file.is_some() {
                    return Err(ApiError::InvalidRequest(
                        "the form has more than one 'file': send one audio file per request".into(),
                    ));
                }
                let bytes = field.bytes().await.map_err(|e| field_error(state, e))?;
                form.file = Some(bytes.to_vec());
            }
            "model" => form.model = Some(text_of(state, field, &name).await?),
            "prompt" => form.prompt = Some(text_of(state, field, &name).await?),
            "response_format" => form.response_format = Some(text_of(state, field, &name).await?),
            "temperature" => form.temperature = Some(text_of(state, field, &name).await?),
            "stream" => form.stream = Some(text_of(state, field, &name).await?),
            "max_tokens" => form.max_tokens = Some(text_of(state, field, &name).await?),
            // Drain what we do not use so the next field can be read.
            _ => {
                field.bytes().await.map_err(|e| field_error(state, e))?;
            }
        }
    }
    Ok(form)
}

/// `response_format`, `stream`, sampling and the token bound, validated.
struct Options {
    format: Format,
    stream: bool,
    sampling: SamplingParams,
    max_tokens: Option<usize>,
}

fn options(form: &Form) -> Result<Options, ApiError> {
    let format = match form.response_format.as_deref().map(str::to_ascii_lowercase) {
        None => Format::Json,
        Some(f) if f.is_empty() || f == "json" => Format::Json,
        Some(f) if f == "text" => Format::Text,
        Some(f) => {
            return Err(ApiError::InvalidRequest(format!(
                "response_format '{f}' is not supported (use json or text)"
            )));
        }
    };
    let stream = match form.stream.as_deref().map(str::to_ascii_lowercase) {
        None => false,
        Some(s) if s == "true" || s == "1" => true,
        Some(s) if s.is_empty() || s == "false" || s == "0" => false,
        Some(s) => {
            return Err(ApiError::InvalidRequest(format!(
                "stream must be true or false (got '{s}')"
            )));
        }
    };
    // Greedy unless the client asks for sampling.
    let mut sampling = SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    };
    if let Some(t) = form.temperature.as_deref().filter(|t| !t.is_empty()) {
        let t: f32 = t
            .parse()
            .ok()
            .filter(|t: &f32| t.is_finite())
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!("temperature must be a number (got '{t}')"))
            })?;
        sampling.temperature = t.max(0.0);
    }
    let max_tokens = match form.max_tokens.as_deref().filter(|n| !n.is_empty()) {
        None => None,
        Some(n) => {
            let n: i64 = n.parse().map_err(|_| {
                ApiError::InvalidRequest(format!("max_tokens must be an integer (got '{n}')"))
            })?;
            usize::try_from(n).ok()
        }
    };
    Ok(Options {
        format,
        stream,
        sampling,
        max_tokens,
    })
}

/// Everything the handler checks in a form before the model is involved: reading it, its
/// options and decoding its audio. The fuzzing entry point (`crate::fuzzing`).
pub(crate) async fn check_form(state: &AppState, multipart: Multipart) -> Result<(), ApiError> {
    let form = read_form(state, multipart).await?;
    options(&form)?;
    if let Some(file) = &form.file {
        decode_audio(file, &state.media_policy(), "file")?;
    }
    Ok(())
}

/// The chat of a transcription: one user message, the audio then the instruction.
fn transcription_messages(prompt: Option<&str>) -> Vec<ChatMessage> {
    let instruction = prompt
        .filter(|p| !p.trim().is_empty())
        .unwrap_or(DEFAULT_INSTRUCTION);
    vec![ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::input_audio("", ""),
            ContentPart::text(instruction),
        ]),
    )]
}

/// OpenAI's token usage object of transcriptions.
fn usage_json(u: &Usage) -> Value {
    json!({
        "type": "tokens",
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

pub(super) async fn transcriptions(
    State(state): State<AppState>,
    method: Method,
    uri: axum::http::Uri,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut origin = Origin::new(&state, method, &uri);
    let backend = state.backend()?;
    let multipart = multipart.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            multipart_error(&state, r.status(), r.body_text())
        } else {
            ApiError::InvalidRequest(format!(
                "expected a multipart/form-data body with an audio 'file': {}",
                r.body_text()
            ))
        }
    })?;
    let form = read_form(&state, multipart).await?;
    let info = backend.info().clone();
    if let Some(name) = form.model.as_deref().map(str::trim)
        && !name.is_empty()
        && !model_matches(name, &info)
    {
        return Err(ApiError::ModelNotFound(name.to_owned()));
    }
    let opts = options(&form)?;
    let Some(file) = form.file else {
        return Err(ApiError::InvalidRequest(
            "the form has no 'file': attach the audio as a file field named 'file'".into(),
        ));
    };
    if !info.audio {
        return Err(unsupported_media(
            mtmd::MediaKind::Audio,
            "file",
            info.mmproj_path.is_some(),
        ));
    }
    let policy = state.media_policy();
    // Decoding (and resampling) minutes of audio is blocking work.
    let clip = tokio::task::spawn_blocking(move || decode_audio(&file, &policy, "file"))
        .await
        .map_err(|e| ApiError::Internal(format!("audio decoding failed: {e}")))??;
    let request = Request {
        prompt: Prompt::Chat {
            messages: transcription_messages(form.prompt.as_deref()),
            media: vec![MediaItem::Audio(clip)],
        },
        sampling: opts.sampling,
        max_tokens: opts.max_tokens,
        stop: Vec::new(),
    };
    origin.admit(&state, &*backend)?;
    transcribe(backend, request, opts.format, opts.stream, origin).await
}

async fn transcribe(
    backend: Arc<dyn Backend>,
    request: Request,
    format: Format,
    stream: bool,
    origin: Origin,
) -> Result<Response, ApiError> {
    let mut rx = backend.submit(request);
    if stream {
        // As for chat: a request the engine refuses outright still gets its HTTP status.
        let first = origin.next_event(&mut rx).await?;
        if let Event::Error(e) = first {
            return Err(e.into());
        }
        let wire = TranscriptWire {
            text: String::new(),
        };
        return Ok(sse_response(rx, first, wire, origin));
    }
    let mut text = String::new();
    loop {
        match origin.next_event(&mut rx).await? {
            Event::Started { .. } => {}
            Event::Text(piece) => text.push_str(&piece),
            Event::Error(e) => return Err(e.into()),
            done => {
                let f = finished(&done).ok_or_else(engine_vanished)?;
                let mut response = match format {
                    Format::Json => {
                        Json(json!({"text": text, "usage": usage_json(&f.usage)})).into_response()
                    }
                    Format::Text => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text)
                        .into_response(),
                };
                response.extensions_mut().insert(Tokens {
                    prompt: f.usage.prompt_tokens,
                    generated: f.usage.completion_tokens,
                });
                return Ok(response);
            }
        }
    }
}

/// Streamed transcription: a `transcript.text.delta` per piece, then `transcript.text.done`
/// with the whole text (and usage).
struct TranscriptWire {
    text: String,
}

impl Wire for TranscriptWire {
    fn text(&mut self, piece: &str) -> Value {
        self.text.push_str(piece);
        json!({"type": "transcript.text.delta", "delta": piece})
    }

    fn done(&mut self, finished: Option<&Finished>) -> Vec<SseEvent> {
        let mut last = json!({"type": "transcript.text.done", "text": self.text});
        if let Some(f) = finished {
            last["usage"] = usage_json(&f.usage);
        }
        vec![data(&last)]
    }
}
