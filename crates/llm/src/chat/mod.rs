//! Chat templates: turn a conversation into the prompt text a model was trained on.
//!
//! A GGUF's `tokenizer.chat_template` is rendered as HF transformers renders it (Jinja via
//! minijinja, see [`jinja`]); a GGUF without one gets llama.cpp's built-in format for its model
//! family (see [`builtin`]), ChatML as the last resort.
//!
//! Media parts (images, audio) come out as the media marker (`<__media__>` unless configured),
//! one per item, in order: the multimodal layer splits the prompt there. Templates that iterate
//! content parts get a native `{"type": "image"}` part when they know what to write for it (the
//! template's own placeholder is then swapped for the marker, so "User:<image>" spacing and
//! "Audio 1: ..." numbering stay as the model's processor makes them); otherwise a text part
//! holding the marker. String-only templates get text parts and markers joined, as llama.cpp does.

pub mod builtin;
pub mod jinja;
mod message;
pub mod pyjson;
pub mod strftime;

use gguf::GgufFile;
use serde_json::{Map, Value as Json};

pub use builtin::BuiltinFormat;
pub use jinja::JinjaTemplate;
pub use message::{
    ChatMessage, ContentPart, FunctionCall, ImageUrl, InputAudio, MediaKind, MessageContent,
    ToolCall,
};

use message::{ContentStyle, MediaAs, message_to_template_json};

/// What libmtmd looks for in a prompt to place media.
pub const DEFAULT_MEDIA_MARKER: &str = "<__media__>";

#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error("reading the chat template from GGUF metadata: {0}")]
    Gguf(#[from] gguf::GgufError),
    #[error("the chat template does not compile: {0}")]
    Syntax(String),
    /// The template called `raise_exception(message)` (e.g. "Conversation roles must alternate").
    #[error("the chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("the chat template failed to render: {0}")]
    Render(String),
    #[error("unknown built-in chat template {name:?} (known: {known})")]
    UnknownBuiltin { name: String, known: String },
}

/// Options for [`ChatTemplate::render_with`].
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// End the prompt with the opening of an assistant turn.
    pub add_generation_prompt: bool,
    /// OpenAI-style tool definitions, passed to the template as `tools`.
    pub tools: Option<Vec<Json>>,
    /// Extra template variables (e.g. `enable_thinking`), as HF's `**kwargs`.
    pub extra: Map<String, Json>,
}

#[derive(Debug)]
enum Kind {
    Jinja(Box<JinjaTemplate>),
    Builtin(BuiltinFormat),
}

/// A model's chat template, ready to render conversations.
#[derive(Debug)]
pub struct ChatTemplate {
    kind: Kind,
    bos_token: String,
    eos_token: String,
    /// The tokenizer adds BOS/EOS itself, so a rendered leading BOS / trailing EOS text is
    /// removed (llama.cpp does the same to avoid doubled tokens).
    strip_bos: bool,
    strip_eos: bool,
    media_marker: String,
}

impl ChatTemplate {
    /// The template a GGUF asks for: its `tokenizer.chat_template` (Jinja, or the name of a
    /// built-in format), else the built-in format detected from the architecture and the
    /// vocabulary, else ChatML.
    pub fn from_gguf(file: &GgufFile) -> Result<ChatTemplate, ChatError> {
        let tokens: Vec<&str> = file
            .opt_array("tokenizer.ggml.tokens")?
            .and_then(|a| a.as_strs())
            .unwrap_or_default();
        let token_text = |key: &str| -> Result<String, ChatError> {
            let id = file.opt_u32(key)?;
            Ok(id
                .and_then(|id| tokens.get(id as usize))
                .map(|t| (*t).to_owned())
                .unwrap_or_default())
        };
        let bos_token = token_text("tokenizer.ggml.bos_token_id")?;
        let eos_token = token_text("tokenizer.ggml.eos_token_id")?;
        let tokenizer_model = file.opt_str("tokenizer.ggml.model")?.unwrap_or("");
        // llama.cpp's default when the key is absent: SentencePiece vocabularies add BOS.
        let add_bos = file
            .opt_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(tokenizer_model == "llama");
        let add_eos = file
            .opt_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false);

        let kind = match file.opt_str("tokenizer.chat_template")? {
            Some(source) => match BuiltinFormat::from_name(source.trim()) {
                Some(format) => Kind::Builtin(format),
                None => Kind::Jinja(Box::new(JinjaTemplate::new(source)?)),
            },
            None => {
                let arch = file.opt_str("general.architecture")?.unwrap_or("");
                let pre = file.opt_str("tokenizer.ggml.pre")?;
                Kind::Builtin(
                    BuiltinFormat::detect_from_model(arch, &tokens, pre)
                        .unwrap_or(BuiltinFormat::ChatMl),
                )
            }
        };
        Ok(ChatTemplate {
            kind,
            bos_token,
            eos_token,
            strip_bos: add_bos,
            strip_eos: add_eos,
            media_marker: DEFAULT_MEDIA_MARKER.to_owned(),
        })
    }

    /// llama.cpp's built-in format called `name` (`chatml`, `gemma`, `llama3`, `mistral-v7` ...).
    pub fn builtin(name: &str) -> Result<ChatTemplate, ChatError> {
        let format = BuiltinFormat::from_name(name).ok_or_else(|| ChatError::UnknownBuiltin {
            name: name.to_owned(),
            known: BuiltinFormat::all_names().collect::<Vec<_>>().join(", "),
        })?;
        Ok(Self::from_kind(Kind::Builtin(format)))
    }

    /// A Jinja template given as text (e.g. `--chat-template-file`); set the special tokens with
    /// [`ChatTemplate::with_special_tokens`].
    pub fn from_jinja(source: &str) -> Result<ChatTemplate, ChatError> {
        Ok(Self::from_kind(Kind::Jinja(Box::new(JinjaTemplate::new(
            source,
        )?))))
    }

    fn from_kind(kind: Kind) -> ChatTemplate {
        ChatTemplate {
            kind,
            bos_token: String::new(),
            eos_token: String::new(),
            strip_bos: false,
            strip_eos: false,
            media_marker: DEFAULT_MEDIA_MARKER.to_owned(),
        }
    }

    /// The text of `bos_token`/`eos_token` for the template, and whether the tokenizer adds
    /// them itself (then a rendered leading BOS / trailing EOS is removed).
    pub fn with_special_tokens(
        mut self,
        bos: &str,
        eos: &str,
        tokenizer_adds_bos: bool,
        tokenizer_adds_eos: bool,
    ) -> Self {
        self.bos_token = bos.to_owned();
        self.eos_token = eos.to_owned();
        self.strip_bos = tokenizer_adds_bos;
        self.strip_eos = tokenizer_adds_eos;
        self
    }

    /// The text media parts become (default [`DEFAULT_MEDIA_MARKER`]).
    pub fn with_media_marker(mut self, marker: &str) -> Self {
        self.media_marker = marker.to_owned();
        self
    }

    pub fn media_marker(&self) -> &str {
        &self.media_marker
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// `Some` when this is one of llama.cpp's built-in formats.
    pub fn builtin_format(&self) -> Option<BuiltinFormat> {
        match &self.kind {
            Kind::Builtin(f) => Some(*f),
            Kind::Jinja(_) => None,
        }
    }

    /// `Some` when this is a Jinja template.
    pub fn jinja(&self) -> Option<&JinjaTemplate> {
        match &self.kind {
            Kind::Jinja(j) => Some(j),
            Kind::Builtin(_) => None,
        }
    }

    /// Renders the conversation; `add_generation_prompt` ends it with an open assistant turn.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        self.render_with(
            messages,
            &RenderOptions {
                add_generation_prompt,
                ..RenderOptions::default()
            },
        )
    }

    /// Renders with tools and extra template variables.
    pub fn render_with(
        &self,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<String, ChatError> {
        let jinja = match &self.kind {
            Kind::Builtin(format) => {
                return Ok(format.render(
                    messages,
                    options.add_generation_prompt,
                    &self.media_marker,
                ));
            }
            Kind::Jinja(jinja) => jinja,
        };
        let style = jinja.content_style();
        let mut text = match self.render_native_media(jinja, style, messages, options)? {
            Some(text) => text,
            None => {
                // The template's placeholders could not be told apart from other text:
                // hand it text parts holding the marker instead.
                let plain = ContentStyle {
                    image: MediaAs::MarkerText,
                    audio: MediaAs::MarkerText,
                    ..style
                };
                self.render_jinja(jinja, plain, messages, options)?
            }
        };
        if self.strip_bos && !self.bos_token.is_empty() && text.starts_with(&self.bos_token) {
            text.drain(..self.bos_token.len());
        }
        if self.strip_eos && !self.eos_token.is_empty() && text.ends_with(&self.eos_token) {
            text.truncate(text.len() - self.eos_token.len());
        }
        Ok(text)
    }

    /// Renders with native media parts and swaps the template's placeholders for the marker;
    /// `None` when the placeholder count does not match the media count.
    fn render_native_media(
        &self,
        jinja: &JinjaTemplate,
        style: ContentStyle,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<Option<String>, ChatError> {
        let mut text = self.render_jinja(jinja, style, messages, options)?;
        if !style.typed {
            return Ok(Some(text));
        }
        let count = |kind: MediaKind| -> usize {
            messages
                .iter()
                .filter_map(|m| match &m.content {
                    MessageContent::Parts(parts) => Some(
                        parts
                            .iter()
                            .filter(|p| p.media_kind() == Some(kind))
                            .count(),
                    ),
                    MessageContent::Text(_) => None,
                })
                .sum()
        };
        let mut swaps = Vec::new();
        for (kind, media_as, placeholder) in [
            (MediaKind::Image, style.image, &jinja.image_placeholder),
            (MediaKind::Audio, style.audio, &jinja.audio_placeholder),
        ] {
            let n = count(kind);
            if let (MediaAs::Native, Some(placeholder), true) = (media_as, placeholder, n > 0) {
                if text.matches(placeholder.as_str()).count() != n {
                    return Ok(None);
                }
                swaps.push(placeholder.as_str());
            }
        }
        for placeholder in swaps {
            text = text.replace(placeholder, &self.media_marker);
        }
        Ok(Some(text))
    }

    fn render_jinja(
        &self,
        jinja: &JinjaTemplate,
        style: ContentStyle,
        messages: &[ChatMessage],
        options: &RenderOptions,
    ) -> Result<String, ChatError> {
        let msgs = messages
            .iter()
            .map(|m| message_to_template_json(m, style, &self.media_marker))
            .collect();
        let ctx = jinja::template_context(
            msgs,
            options.add_generation_prompt,
            &self.bos_token,
            &self.eos_token,
            options.tools.as_deref(),
            &options.extra,
        );
        jinja.render_json(&ctx)
    }
}

#[cfg(test)]
mod tests;
