//! Chat messages in OpenAI's wire shape, and their conversion to the dictionaries that chat
//! templates see (the shape HF transformers and llama.cpp hand to Jinja).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value as Json, json};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// `null` on the wire (an assistant turn that only calls tools) reads as empty text.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub content: MessageContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool name, on `tool` messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// The model's thinking for an earlier assistant turn (templates such as Qwen3 re-render it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

impl ChatMessage {
    /// A message whose content is plain text.
    pub fn new(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self::with_content(role, MessageContent::Text(text.into()))
    }

    pub fn with_content(role: impl Into<String>, content: MessageContent) -> Self {
        Self {
            role: role.into(),
            content,
            tool_calls: None,
            name: None,
            tool_call_id: None,
            reasoning_content: None,
        }
    }

    pub fn system(text: impl Into<String>) -> Self {
        Self::new("system", text)
    }

    pub fn user(text: impl Into<String>) -> Self {
        Self::new("user", text)
    }

    pub fn assistant(text: impl Into<String>) -> Self {
        Self::new("assistant", text)
    }
}

/// A message body: a string, or a list of typed parts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl Default for MessageContent {
    fn default() -> Self {
        MessageContent::Text(String::new())
    }
}

impl From<&str> for MessageContent {
    fn from(text: &str) -> Self {
        MessageContent::Text(text.to_owned())
    }
}

impl From<String> for MessageContent {
    fn from(text: String) -> Self {
        MessageContent::Text(text)
    }
}

impl MessageContent {
    /// How many media items (images and audio clips) the content holds, in order.
    pub fn media_count(&self) -> usize {
        match self {
            MessageContent::Text(_) => 0,
            MessageContent::Parts(parts) => {
                parts.iter().filter(|p| p.media_kind().is_some()).count()
            }
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(de: D) -> Result<MessageContent, D::Error> {
    Ok(Option::<MessageContent>::deserialize(de)?.unwrap_or_default())
}

/// One part of a multi-part message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    /// HF-style image part; any extra fields (`url`, `image`, `path` ...) are kept as given.
    Image {
        #[serde(flatten)]
        fields: Map<String, Json>,
    },
    /// OpenAI image part: `{"type":"image_url","image_url":{"url":"data:..."}}`.
    ImageUrl {
        image_url: ImageUrl,
    },
    /// OpenAI audio part: `{"type":"input_audio","input_audio":{"data":"<base64>","format":"wav"}}`.
    InputAudio {
        input_audio: InputAudio,
    },
}

impl ContentPart {
    pub fn text(text: impl Into<String>) -> Self {
        ContentPart::Text { text: text.into() }
    }

    /// A bare image placeholder part (`{"type":"image"}`).
    pub fn image() -> Self {
        ContentPart::Image { fields: Map::new() }
    }

    pub fn image_url(url: impl Into<String>) -> Self {
        ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: url.into(),
                detail: None,
            },
        }
    }

    pub fn input_audio(data: impl Into<String>, format: impl Into<String>) -> Self {
        ContentPart::InputAudio {
            input_audio: InputAudio {
                data: data.into(),
                format: format.into(),
            },
        }
    }

    /// `Some(kind)` for media parts, `None` for text.
    pub fn media_kind(&self) -> Option<MediaKind> {
        match self {
            ContentPart::Text { .. } => None,
            ContentPart::Image { .. } | ContentPart::ImageUrl { .. } => Some(MediaKind::Image),
            ContentPart::InputAudio { .. } => Some(MediaKind::Audio),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputAudio {
    /// Base64-encoded audio file.
    pub data: String,
    /// Container format, e.g. `wav` or `mp3`.
    pub format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Image,
    Audio,
}

impl MediaKind {
    /// The part type HF chat templates test for (`item['type'] == 'image'`).
    pub fn hf_type(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Audio => "audio",
        }
    }
}

/// A function call made by the assistant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// OpenAI sends a JSON-encoded string; an object is accepted as well.
    pub arguments: Json,
}

/// How media parts are handed to a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MediaAs {
    /// A text part holding the media marker (what llama-server does).
    MarkerText,
    /// A native `{"type": "image"}` / `{"type": "audio"}` part; the template's own placeholder
    /// is swapped for the marker after rendering.
    Native,
}

/// How a template takes message content.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContentStyle {
    /// Give multi-part content as a list of parts (else joined into one string).
    pub typed: bool,
    /// The template renders string content; when it does not, a string becomes one text part.
    pub string: bool,
    pub image: MediaAs,
    pub audio: MediaAs,
}

/// Joins parts the way llama.cpp does for templates that only take strings: text parts are
/// separated by a newline, media markers are glued to their neighbours.
pub(crate) fn join_parts(parts: &[ContentPart], marker: &str) -> String {
    let mut text = String::new();
    let mut last_was_marker = false;
    for part in parts {
        match part {
            ContentPart::Text { text: t } => {
                if !last_was_marker && !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
                last_was_marker = false;
            }
            _ => {
                text.push_str(marker);
                last_was_marker = true;
            }
        }
    }
    text
}

/// The content as one string (text parts and media markers joined).
pub(crate) fn content_text(content: &MessageContent, marker: &str) -> String {
    match content {
        MessageContent::Text(t) => t.clone(),
        MessageContent::Parts(parts) => join_parts(parts, marker),
    }
}

/// The dictionary a Jinja template sees for `message`.
pub(crate) fn message_to_template_json(
    msg: &ChatMessage,
    style: ContentStyle,
    marker: &str,
) -> Json {
    let mut obj = Map::new();
    obj.insert("role".into(), Json::String(msg.role.clone()));
    let content = match &msg.content {
        MessageContent::Text(t) if style.string || !style.typed => Json::String(t.clone()),
        MessageContent::Text(t) => json!([{"type": "text", "text": t}]),
        MessageContent::Parts(parts) if style.typed => Json::Array(
            parts
                .iter()
                .map(|p| part_to_template_json(p, style, marker))
                .collect(),
        ),
        MessageContent::Parts(parts) => Json::String(join_parts(parts, marker)),
    };
    obj.insert("content".into(), content);
    if let Some(calls) = &msg.tool_calls {
        let calls = calls.iter().map(tool_call_to_template_json).collect();
        obj.insert("tool_calls".into(), Json::Array(calls));
    }
    if let Some(name) = &msg.name {
        obj.insert("name".into(), Json::String(name.clone()));
    }
    if let Some(id) = &msg.tool_call_id {
        obj.insert("tool_call_id".into(), Json::String(id.clone()));
    }
    if let Some(reasoning) = &msg.reasoning_content {
        obj.insert("reasoning_content".into(), Json::String(reasoning.clone()));
    }
    Json::Object(obj)
}

fn part_to_template_json(part: &ContentPart, style: ContentStyle, marker: &str) -> Json {
    let Some(kind) = part.media_kind() else {
        return serde_json::to_value(part).unwrap_or(Json::Null);
    };
    let media_as = match kind {
        MediaKind::Image => style.image,
        MediaKind::Audio => style.audio,
    };
    match media_as {
        MediaAs::MarkerText => json!({"type": "text", "text": marker}),
        MediaAs::Native => json!({"type": kind.hf_type()}),
    }
}

/// Templates index `tool_call.function.arguments` as an object (`| tojson`, `.items()`), so a
/// JSON string that holds an object is decoded first, as llama.cpp does.
fn tool_call_to_template_json(call: &ToolCall) -> Json {
    let arguments = match &call.function.arguments {
        Json::String(s) => match serde_json::from_str::<Json>(s) {
            Ok(parsed @ Json::Object(_)) => parsed,
            _ => Json::String(s.clone()),
        },
        other => other.clone(),
    };
    let mut obj = Map::new();
    obj.insert("type".into(), Json::String(call.kind.clone()));
    obj.insert(
        "function".into(),
        json!({"name": call.function.name, "arguments": arguments}),
    );
    if let Some(id) = &call.id {
        obj.insert("id".into(), Json::String(id.clone()));
    }
    Json::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_shapes() {
        let wire = r#"[
            {"role":"user","content":[{"type":"text","text":"hi"},
                {"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},
                {"type":"input_audio","input_audio":{"data":"UklG","format":"wav"}},
                {"type":"image","url":"x.png"}]},
            {"role":"assistant","content":null,"tool_calls":[
                {"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
            {"role":"tool","tool_call_id":"c1","name":"f","content":"42"}
        ]"#;
        let msgs: Vec<ChatMessage> = serde_json::from_str(wire).unwrap();
        assert_eq!(msgs.len(), 3);
        let MessageContent::Parts(parts) = &msgs[0].content else {
            panic!("parts expected")
        };
        assert_eq!(parts.len(), 4);
        assert_eq!(parts[1].media_kind(), Some(MediaKind::Image));
        assert_eq!(parts[2].media_kind(), Some(MediaKind::Audio));
        assert_eq!(parts[3].media_kind(), Some(MediaKind::Image));
        assert_eq!(msgs[0].content.media_count(), 3);
        assert_eq!(msgs[1].content, MessageContent::Text(String::new()));
        assert_eq!(msgs[2].tool_call_id.as_deref(), Some("c1"));
        // Round trip keeps the wire shape.
        let back = serde_json::to_value(&msgs[0]).unwrap();
        assert_eq!(back["content"][3], json!({"type":"image","url":"x.png"}));
        assert_eq!(
            back["content"][1]["image_url"]["url"],
            "data:image/png;base64,AAAA"
        );
    }

    #[test]
    fn joins_parts_like_llama_cpp() {
        let parts = vec![
            ContentPart::text("a"),
            ContentPart::text("b"),
            ContentPart::image(),
            ContentPart::text("c"),
            ContentPart::image(),
            ContentPart::image(),
        ];
        assert_eq!(join_parts(&parts, "<M>"), "a\nb<M>c<M><M>");
    }

    #[test]
    fn tool_call_arguments_become_objects() {
        let mut msg = ChatMessage::assistant("");
        msg.tool_calls = Some(vec![ToolCall {
            id: Some("x".into()),
            kind: "function".into(),
            function: FunctionCall {
                name: "get".into(),
                arguments: Json::String(r#"{"city":"Paris"}"#.into()),
            },
        }]);
        let style = ContentStyle {
            typed: true,
            string: true,
            image: MediaAs::MarkerText,
            audio: MediaAs::MarkerText,
        };
        let j = message_to_template_json(&msg, style, "<M>");
        assert_eq!(
            j["tool_calls"][0]["function"]["arguments"],
            json!({"city":"Paris"})
        );
        assert_eq!(j["tool_calls"][0]["id"], "x");
    }
}
