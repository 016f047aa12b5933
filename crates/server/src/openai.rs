//! OpenAI's wire format: request bodies of `/v1/chat/completions` and `/v1/completions`, their
//! translation into a [`Request`], and the response / stream-chunk objects. Unknown request
//! fields are ignored (clients send many we have no use for); absent sampling fields take
//! llama.cpp server's defaults.

use llm::chat::{ChatMessage, ContentPart, MessageContent};
use llm::sampling::SamplingParams;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::api_error::{ApiError, unsupported_media};
use super::backend::{FinishReason, MediaItem, ModelInfo, Prompt, Request, Usage};
use super::media_input::{MediaPolicy, load_audio, load_image};

/// Fields shared by both endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i32>,
    pub min_p: Option<f32>,
    /// Negative (llama.cpp's -1): no limit.
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub stop: Option<Stop>,
    /// Negative (llama.cpp's -1): random.
    pub seed: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// llama.cpp extension.
    pub repeat_penalty: Option<f32>,
    /// llama.cpp extension: how many recent tokens the penalties look at.
    pub repeat_last_n: Option<i32>,
    pub n: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptField,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptField {
    One(String),
    Many(Vec<String>),
}

impl Common {
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// 404 unless `model` is absent/empty or names what is served (id, file name or stem).
    pub fn check_model(&self, info: &ModelInfo) -> Result<(), ApiError> {
        match self.model.as_deref().map(str::trim) {
            None | Some("") => Ok(()),
            Some(name) if model_matches(name, info) => Ok(()),
            Some(name) => Err(ApiError::ModelNotFound(name.to_owned())),
        }
    }

    fn sampling(&self) -> Result<(SamplingParams, Option<usize>, Vec<String>), ApiError> {
        if let Some(n) = self.n
            && n != 1
        {
            return Err(ApiError::InvalidRequest(format!(
                "n = {n} is not supported: only one choice per request (n = 1)"
            )));
        }
        let mut s = SamplingParams::default();
        let finite = |name: &str, v: Option<f32>| -> Result<Option<f32>, ApiError> {
            match v {
                Some(x) if !x.is_finite() => Err(ApiError::InvalidRequest(format!(
                    "{name} must be a finite number"
                ))),
                v => Ok(v),
            }
        };
        if let Some(t) = finite("temperature", self.temperature)? {
            s.temperature = t.max(0.0);
        }
        if let Some(p) = finite("top_p", self.top_p)? {
            s.top_p = p.clamp(0.0, 1.0);
        }
        if let Some(k) = self.top_k {
            s.top_k = k;
        }
        if let Some(p) = finite("min_p", self.min_p)? {
            s.min_p = p.clamp(0.0, 1.0);
        }
        if let Some(p) = finite("presence_penalty", self.presence_penalty)? {
            s.presence_penalty = p;
        }
        if let Some(p) = finite("frequency_penalty", self.frequency_penalty)? {
            s.frequency_penalty = p;
        }
        if let Some(p) = finite("repeat_penalty", self.repeat_penalty)? {
            s.repeat_penalty = p;
        }
        if let Some(n) = self.repeat_last_n {
            s.penalty_last_n = n.max(-1);
        }
        s.seed = self.seed.and_then(|x| u64::try_from(x).ok());
        let max_tokens = self
            .max_completion_tokens
            .or(self.max_tokens)
            .and_then(|n| usize::try_from(n).ok());
        let stop = match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        };
        let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        Ok((s, max_tokens, stop))
    }
}

/// Names clients may use for the served model: its id, the model file's name or stem.
pub fn model_matches(name: &str, info: &ModelInfo) -> bool {
    if name == info.id {
        return true;
    }
    let path = std::path::Path::new(&info.model_path);
    let file = path.file_name().and_then(|f| f.to_str());
    let stem = path.file_stem().and_then(|f| f.to_str());
    Some(name) == file || Some(name) == stem || name == info.model_path
}

impl ChatRequest {
    /// Validates the request and decodes its media (blocking: may decode and download).
    pub fn into_request(self, info: &ModelInfo, policy: &MediaPolicy) -> Result<Request, ApiError> {
        let (sampling, max_tokens, stop) = self.common.sampling()?;
        if self.messages.is_empty() {
            return Err(ApiError::InvalidRequest(
                "messages must not be empty".into(),
            ));
        }
        let mut media = Vec::new();
        let mut messages = self.messages;
        for (i, message) in messages.iter_mut().enumerate() {
            let MessageContent::Parts(parts) = &mut message.content else {
                continue;
            };
            for (j, part) in parts.iter_mut().enumerate() {
                let what = format!("messages[{i}].content[{j}]");
                let url = match part {
                    ContentPart::Text { .. } => continue,
                    ContentPart::InputAudio { input_audio } => {
                        if !info.audio {
                            return Err(unsupported_media(
                                mtmd::MediaKind::Audio,
                                &what,
                                info.mmproj_path.is_some(),
                            ));
                        }
                        let clip =
                            load_audio(&input_audio.data, &input_audio.format, policy, &what)?;
                        media.push(MediaItem::Audio(clip));
                        // The template only needs to know an audio clip sits here.
                        *part = ContentPart::input_audio("", "");
                        continue;
                    }
                    ContentPart::ImageUrl { image_url } => image_url.url.clone(),
                    ContentPart::Image { fields } => hf_image_source(fields).ok_or_else(|| {
                        ApiError::InvalidImage(format!(
                            "{what}: an image part needs its data: use {{\"type\": \"image_url\", \
                             \"image_url\": {{\"url\": \"data:image/png;base64,...\"}}}}"
                        ))
                    })?,
                };
                if !info.vision {
                    return Err(unsupported_media(
                        mtmd::MediaKind::Image,
                        &what,
                        info.mmproj_path.is_some(),
                    ));
                }
                media.push(MediaItem::Image(load_image(&url, policy, &what)?));
                *part = ContentPart::image();
            }
        }
        Ok(Request {
            prompt: Prompt::Chat { messages, media },
            sampling,
            max_tokens,
            stop,
        })
    }
}

/// The data of an HF-style `{"type": "image", "url" | "image": "..."}` part.
fn hf_image_source(fields: &serde_json::Map<String, Json>) -> Option<String> {
    ["url", "image", "image_url"]
        .iter()
        .find_map(|k| match fields.get(*k) {
            Some(Json::String(s)) => Some(s.clone()),
            Some(Json::Object(o)) => o.get("url").and_then(Json::as_str).map(str::to_owned),
            _ => None,
        })
}

impl CompletionRequest {
    pub fn into_request(self) -> Result<Request, ApiError> {
        let (sampling, max_tokens, stop) = self.common.sampling()?;
        let prompt = match self.prompt {
            PromptField::One(p) => p,
            PromptField::Many(mut v) if v.len() == 1 => v.remove(0),
            PromptField::Many(v) => {
                return Err(ApiError::InvalidRequest(format!(
                    "prompt must be a string or an array of one string (got {} strings)",
                    v.len()
                )));
            }
        };
        Ok(Request {
            prompt: Prompt::Text(prompt),
            sampling,
            max_tokens,
            stop,
        })
    }
}

/// Which endpoint's objects to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

/// What a finished request reports beyond its text.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub usage: Usage,
    pub finish: FinishReason,
    pub prompt_ms: f64,
    pub predicted_ms: f64,
}

pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::Cancelled => "stop",
    }
}

pub fn usage_json(u: &Usage) -> Json {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}

/// llama.cpp's `timings` object.
pub fn timings_json(f: &Finished) -> Json {
    let per_second = |n: usize, ms: f64| {
        if ms > 0.0 {
            n as f64 * 1000.0 / ms
        } else {
            0.0
        }
    };
    let evaluated = f.usage.prompt_tokens.saturating_sub(f.usage.cached_tokens);
    json!({
        "cache_n": f.usage.cached_tokens,
        "prompt_n": evaluated,
        "prompt_ms": f.prompt_ms,
        "prompt_per_second": per_second(evaluated, f.prompt_ms),
        "predicted_n": f.usage.completion_tokens,
        "predicted_ms": f.predicted_ms,
        "predicted_per_second": per_second(f.usage.completion_tokens, f.predicted_ms),
    })
}

/// Identity shared by every object of one response.
#[derive(Debug, Clone)]
pub struct Meta {
    pub kind: Kind,
    pub id: String,
    pub created: u64,
    pub model: String,
}

impl Meta {
    pub fn new(kind: Kind, model: &str) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let prefix = match kind {
            Kind::Chat => "chatcmpl",
            Kind::Completion => "cmpl",
        };
        Meta {
            kind,
            id: format!("{prefix}-{}", random_id()),
            created,
            model: model.to_owned(),
        }
    }

    /// The non-streaming response.
    pub fn response(&self, text: String, f: &Finished) -> Json {
        let (object, choice) = match self.kind {
            Kind::Chat => (
                "chat.completion",
                json!({
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": null,
                    "finish_reason": finish_str(f.finish),
                }),
            ),
            Kind::Completion => (
                "text_completion",
                json!({
                    "index": 0,
                    "text": text,
                    "logprobs": null,
                    "finish_reason": finish_str(f.finish),
                }),
            ),
        };
        let mut body = self.envelope(object, vec![choice]);
        body["usage"] = usage_json(&f.usage);
        body["timings"] = timings_json(f);
        body
    }

    /// One stream chunk: `delta` is the chat delta (ignored for completions, which carry
    /// `text`), `finish` is set on the last content chunk.
    pub fn chunk(&self, delta: Json, text: &str, finish: Option<FinishReason>) -> Json {
        let finish = finish.map(finish_str);
        let (object, choice) = match self.kind {
            Kind::Chat => (
                "chat.completion.chunk",
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}),
            ),
            Kind::Completion => (
                "text_completion",
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish}),
            ),
        };
        self.envelope(object, vec![choice])
    }

    /// The `stream_options.include_usage` chunk: no choices, the usage.
    pub fn usage_chunk(&self, f: &Finished) -> Json {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut body = self.envelope(object, Vec::new());
        body["usage"] = usage_json(&f.usage);
        body["timings"] = timings_json(f);
        body
    }

    /// The fields every response and chunk starts with.
    fn envelope(&self, object: &str, choices: Vec<Json>) -> Json {
        json!({
            "id": self.id,
            "object": object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": fingerprint(),
            "choices": choices,
        })
    }
}

fn fingerprint() -> String {
    format!("mtmd-rs-{}", env!("CARGO_PKG_VERSION"))
}

/// 24 hex digits, unique enough for response ids (no rand crate needed for this).
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:016x}{nanos:08x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_take_llama_server_defaults() {
        let req: ChatRequest =
            serde_json::from_str(r#"{"messages":[{"role":"user","content":"hi"}],"foo":1}"#)
                .expect("parse");
        let (s, max, stop) = req.common.sampling().expect("sampling");
        assert_eq!(s, SamplingParams::default());
        assert_eq!(max, None);
        assert!(stop.is_empty());
    }

    #[test]
    fn fields_map_onto_sampling() {
        let req: ChatRequest = serde_json::from_str(
            r#"{"messages":[],"temperature":0,"top_p":0.5,"top_k":7,"min_p":0.1,
                "max_tokens":5,"max_completion_tokens":9,"stop":"END","seed":42,
                "presence_penalty":0.5,"frequency_penalty":0.25,"repeat_penalty":1.1}"#,
        )
        .expect("parse");
        let (s, max, stop) = req.common.sampling().expect("sampling");
        assert_eq!(s.temperature, 0.0);
        assert_eq!((s.top_p, s.top_k, s.min_p), (0.5, 7, 0.1));
        assert_eq!(s.seed, Some(42));
        assert_eq!(
            (s.presence_penalty, s.frequency_penalty, s.repeat_penalty),
            (0.5, 0.25, 1.1)
        );
        assert_eq!(max, Some(9), "max_completion_tokens wins");
        assert_eq!(stop, vec!["END".to_owned()]);
    }

    #[test]
    fn n_other_than_one_is_refused() {
        let req: CompletionRequest =
            serde_json::from_str(r#"{"prompt":"x","n":2}"#).expect("parse");
        assert!(matches!(
            req.into_request(),
            Err(ApiError::InvalidRequest(_))
        ));
    }
}
