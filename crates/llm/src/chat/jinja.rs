//! Jinja chat templates rendered the way HF transformers' `apply_chat_template` does:
//! trim_blocks + lstrip_blocks, loop controls, Python string/dict methods, `raise_exception`,
//! `strftime_now` and a `tojson` equal to Python's `json.dumps(ensure_ascii=False)`.

use std::fmt;

use minijinja::value::Serde;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{Map, Value as Json, json};

use super::ChatError;
use super::message::{ContentStyle, MediaAs, MediaKind};
use super::pyjson::tojson_filter;
use super::strftime::{DateTime, strftime};

const TEMPLATE_NAME: &str = "chat_template";

/// Instructions one render may execute. Real templates on long conversations with tools use
/// a few hundred thousand (see the `real_templates_use_little_fuel` test); this bounds a
/// template that loops (nested `range`s) to a few seconds.
pub const MAX_FUEL: u64 = 20_000_000;
/// Depth of macro calls, recursive loops and includes. Real templates nest a few levels (a
/// JSON-schema printer recursing into properties); deep recursion would exhaust the stack of
/// a server worker thread before minijinja's default of 500.
pub const MAX_RECURSION: usize = 64;
/// Largest rendered prompt. Far beyond any context window, so only a runaway template hits it.
pub const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// The error `raise_exception(msg)` attaches, so the message can be told from engine errors.
#[derive(Debug)]
struct Raised(String);

impl fmt::Display for Raised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

/// A compiled Jinja chat template and what probing found out about it.
pub struct JinjaTemplate {
    env: Environment<'static>,
    source: String,
    /// Renders content given as a plain string.
    pub supports_string_content: bool,
    /// Renders content given as a list of `{"type": "text"}` parts.
    pub supports_typed_content: bool,
    /// What the template writes for a `{"type": "image"}` part (replaced by the media marker).
    pub image_placeholder: Option<String>,
    /// Same for `{"type": "audio"}` parts.
    pub audio_placeholder: Option<String>,
}

impl fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("source_len", &self.source.len())
            .field("supports_string_content", &self.supports_string_content)
            .field("supports_typed_content", &self.supports_typed_content)
            .field("image_placeholder", &self.image_placeholder)
            .field("audio_placeholder", &self.audio_placeholder)
            .finish()
    }
}

fn new_environment() -> Environment<'static> {
    let mut env = Environment::new();
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    env.set_fuel(Some(MAX_FUEL));
    env.set_recursion_limit(MAX_RECURSION);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("tojson", tojson_filter);
    env.add_function(
        "raise_exception",
        |message: String| -> Result<Value, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, message.clone())
                .with_source(Raised(message)))
        },
    );
    env.add_function("strftime_now", |format: String| {
        strftime(&format, &DateTime::now_utc())
    });
    env
}

impl JinjaTemplate {
    /// Compiles `source` and probes how it takes content and media.
    pub fn new(source: &str) -> Result<Self, ChatError> {
        let mut env = new_environment();
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(|e| ChatError::Syntax(describe(&e)))?;
        let mut tmpl = Self {
            env,
            source: source.to_owned(),
            supports_string_content: true,
            supports_typed_content: false,
            image_placeholder: None,
            audio_placeholder: None,
        };
        tmpl.probe();
        Ok(tmpl)
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders with `context` as the template's variables.
    pub fn render_json(&self, context: &Json) -> Result<String, ChatError> {
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| ChatError::Render(describe(&e)))?;
        let mut out = CappedWriter::default();
        match tmpl.render_captured_to(Value::from(Serde(context)), &mut out) {
            Ok(_) => {}
            Err(_) if out.overflowed => {
                return Err(ChatError::Render(format!(
                    "the rendered prompt exceeds {MAX_OUTPUT_BYTES} bytes"
                )));
            }
            Err(e) => return Err(render_error(e)),
        }
        // Only `str` pieces are written, and the cut happens between writes.
        String::from_utf8(out.bytes)
            .map_err(|_| ChatError::Render("the template wrote invalid UTF-8".into()))
    }

    /// How messages should be given to this template.
    pub(crate) fn content_style(&self) -> ContentStyle {
        let native = |p: &Option<String>| {
            if p.is_some() {
                MediaAs::Native
            } else {
                MediaAs::MarkerText
            }
        };
        ContentStyle {
            // Like llama.cpp: keep parts unless the template only renders strings.
            typed: self.supports_typed_content,
            string: self.supports_string_content,
            image: native(&self.image_placeholder),
            audio: native(&self.audio_placeholder),
        }
    }

    /// Finds out, by rendering small conversations, whether the template renders string and/or
    /// typed content (llama.cpp's capability probe) and what it writes for an image or audio part.
    fn probe(&mut self) {
        const NEEDLE: &str = "MtmdProbeNeedle";
        let contains = |out: Option<String>| out.is_some_and(|s| s.contains(NEEDLE));
        let string = contains(self.render_user(json!(NEEDLE)));
        // A template that prints the list itself (`{{ content }}` -> "[{'type': 'text', ...") only
        // takes strings; one that walks the parts writes the text alone.
        let typed = self
            .render_user(json!([{"type": "text", "text": NEEDLE}]))
            .is_some_and(|s| {
                s.contains(NEEDLE) && !s.contains("'type'") && !s.contains("\"type\"")
            });
        // Neither: unknown shape; strings are what most templates take.
        self.supports_string_content = string || !typed;
        self.supports_typed_content = typed;
        if typed {
            self.image_placeholder = self.probe_placeholder(MediaKind::Image);
            self.audio_placeholder = self.probe_placeholder(MediaKind::Audio);
        }
    }

    /// Renders one user message with `content`; `None` when the template fails on it.
    fn render_user(&self, content: Json) -> Option<String> {
        let ctx = json!({
            "messages": [{"role": "user", "content": content}],
            "add_generation_prompt": false,
            "bos_token": "",
            "eos_token": "",
            "tools": null,
        });
        self.render_json(&ctx).ok()
    }

    /// Renders `[text A, media, text B, media, text C]` and looks at what the template wrote
    /// between the sentinels. The placeholder is the longest run of tags (`<...>`, `[...]`)
    /// written the same way both times: templates that number media ("Audio 1: <|audio_bos|>
    /// <|AUDIO|><|audio_eos|>") keep their numbering and only the tokens become the marker.
    /// With no tags, a segment written identically both times is the placeholder as a whole.
    fn probe_placeholder(&self, kind: MediaKind) -> Option<String> {
        const A: &str = "MtmdProbeA";
        const B: &str = "MtmdProbeB";
        const C: &str = "MtmdProbeC";
        let media = json!({"type": kind.hf_type()});
        let parts = json!([
            {"type": "text", "text": A}, media, {"type": "text", "text": B}, media, {"type": "text", "text": C},
        ]);
        let out = self.render_user(parts)?;
        let first = between(&out, A, B)?;
        let second = between(&out, B, C)?;
        let placeholder = tag_runs(first)
            .into_iter()
            .filter(|run| tag_runs(second).contains(run))
            .max_by_key(|run| run.len())
            .or_else(|| (first == second).then(|| first.trim()))?;
        (!placeholder.is_empty() && !placeholder.contains("MtmdProbe"))
            .then(|| placeholder.to_owned())
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = s.find(start)? + start.len();
    let to = from + s[from..].find(end)?;
    Some(&s[from..to])
}

/// Maximal runs of adjacent tags like `<|image_pad|>` or `[IMG]` (no whitespace inside a tag).
fn tag_runs(s: &str) -> Vec<&str> {
    let bytes = s.as_bytes();
    let tag_end = |start: usize| -> Option<usize> {
        let close = match bytes.get(start)? {
            b'<' => b'>',
            b'[' => b']',
            _ => return None,
        };
        let open = bytes[start];
        let len = bytes[start + 1..]
            .iter()
            .position(|&b| b == close || b == open || b.is_ascii_whitespace())?;
        let end = start + 1 + len;
        (bytes[end] == close && len > 0).then_some(end + 1)
    };
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let Some(mut end) = tag_end(i) else {
            i += 1;
            continue;
        };
        let start = i;
        while let Some(next) = tag_end(end) {
            end = next;
        }
        runs.push(&s[start..end]);
        i = end;
    }
    runs
}

/// Builds the variables HF transformers passes: messages, add_generation_prompt, the special
/// tokens as text, tools (None when absent), then the caller's extra kwargs.
pub(crate) fn template_context(
    messages: Vec<Json>,
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
    tools: Option<&[Json]>,
    extra: &Map<String, Json>,
) -> Json {
    let mut ctx = Map::new();
    ctx.insert("messages".into(), Json::Array(messages));
    ctx.insert(
        "add_generation_prompt".into(),
        Json::Bool(add_generation_prompt),
    );
    ctx.insert("bos_token".into(), Json::String(bos_token.to_owned()));
    ctx.insert("eos_token".into(), Json::String(eos_token.to_owned()));
    ctx.insert(
        "tools".into(),
        tools.map_or(Json::Null, |t| Json::Array(t.to_vec())),
    );
    for (key, value) in extra {
        ctx.insert(key.clone(), value.clone());
    }
    Json::Object(ctx)
}

/// The render target: refuses to grow past [`MAX_OUTPUT_BYTES`], so a template printing in a
/// loop fails instead of filling memory.
#[derive(Default)]
struct CappedWriter {
    bytes: Vec<u8>,
    overflowed: bool,
}

impl std::io::Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.overflowed = true;
            return Err(std::io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_error(err: Error) -> ChatError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&err);
    while let Some(e) = source {
        if let Some(raised) = e.downcast_ref::<Raised>() {
            return ChatError::Raised(raised.0.clone());
        }
        source = e.source();
    }
    ChatError::Render(describe(&err))
}

/// The error with its line number, on one line.
fn describe(err: &Error) -> String {
    match err.line() {
        Some(line) => format!("{err} (line {line})"),
        None => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(src: &str, ctx: Json) -> Result<String, ChatError> {
        JinjaTemplate::new(src)?.render_json(&ctx)
    }

    #[test]
    fn tojson_is_python_json_dumps() {
        let ctx = json!({"x": {"q": "it's <b> & \"c\" é", "n": [1, 2.5, null, true]}});
        assert_eq!(
            render("{{ x | tojson }}", ctx.clone()).unwrap(),
            r#"{"q": "it's <b> & \"c\" é", "n": [1, 2.5, null, true]}"#
        );
        assert_eq!(
            render("{{ x.n | tojson(indent=4) }}", ctx).unwrap(),
            "[\n    1,\n    2.5,\n    null,\n    true\n]"
        );
    }

    #[test]
    fn raise_exception_is_typed() {
        let err = render(
            "{% if x %}{{ raise_exception('roles must alternate') }}{% endif %}",
            json!({"x": true}),
        )
        .unwrap_err();
        match err {
            ChatError::Raised(msg) => assert_eq!(msg, "roles must alternate"),
            other => panic!("unexpected {other:?}"),
        }
        // Inside a macro too.
        let src = "{% macro m() %}{{ raise_exception('deep') }}{% endmacro %}{{ m() }}";
        assert!(matches!(render(src, json!({})), Err(ChatError::Raised(m)) if m == "deep"));
        // Engine errors are not mistaken for raised ones.
        assert!(matches!(
            render("{{ x.y.z }}", json!({})),
            Err(ChatError::Render(_))
        ));
        assert!(matches!(
            JinjaTemplate::new("{% if %}"),
            Err(ChatError::Syntax(_))
        ));
    }

    #[test]
    fn pycompat_methods() {
        let ctx = json!({"s": "  <think>abc</think>\n\nrest  ", "d": {"a": 1, "b": 2}});
        let src = "{{ s.strip().startswith('<think>') }}|{{ s.endswith('  ') }}|{{ s.split('</think>')[-1].lstrip('\\n') }}|\
                   {{ s.rstrip() | length }}|{{ 'a,b'.split(',') | join('+') }}|{{ 'x'.upper() }}|\
                   {% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.get('c', 'none') }}|{{ s.replace('abc', 'X') | trim }}";
        assert_eq!(
            render(src, ctx).unwrap(),
            "True|True|rest  |26|a+b|X|a=1;b=2;|none|<think>X</think>\n\nrest"
        );
    }

    #[test]
    fn trim_and_lstrip_blocks_and_loop_controls() {
        let src = "{% for i in xs %}\n    {% if i == 2 %}{% continue %}{% endif %}\n    {% if i == 4 %}{% break %}{% endif %}\n{{ i }}\n{% endfor %}";
        assert_eq!(
            render(src, json!({"xs": [1, 2, 3, 4, 5]})).unwrap(),
            "1\n3\n"
        );
    }

    #[test]
    fn namespace_slices_and_strftime() {
        let src = "{% set ns = namespace(n=0) %}{% for m in messages[::-1] %}{% set ns.n = ns.n + 1 %}{% endfor %}\
                   {{ ns.n }} {{ messages[1:] | length }} {{ strftime_now('%Y') | length }}";
        let ctx = json!({"messages": [1, 2, 3]});
        assert_eq!(render(src, ctx).unwrap(), "3 2 4");
    }

    #[test]
    fn probes_content_styles_and_placeholders() {
        let string_only =
            JinjaTemplate::new("{% for m in messages %}{{ m.content }}{% endfor %}").unwrap();
        assert!(string_only.supports_string_content);
        assert!(!string_only.supports_typed_content);

        let typed_only = JinjaTemplate::new(
            "{% for m in messages %}{% for p in m.content %}{% if p.type == 'image' %}<image>\
             {% elif p.type == 'text' %}{{ p.text }}{% endif %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        assert!(!typed_only.supports_string_content);
        assert!(typed_only.supports_typed_content);
        assert_eq!(typed_only.image_placeholder.as_deref(), Some("<image>"));
        assert_eq!(typed_only.audio_placeholder, None);

        let numbered = JinjaTemplate::new(
            "{% set c = namespace(n=0) %}{% for m in messages %}{% if m.content is string %}{{ m.content }}\
             {% else %}{% for p in m.content %}{% if p.type == 'audio' %}{% set c.n = c.n + 1 %}Audio {{ c.n }}: <A>\n\
             {% elif 'text' in p %}{{ p.text }}{% endif %}{% endfor %}{% endif %}{% endfor %}",
        )
        .unwrap();
        assert!(numbered.supports_string_content && numbered.supports_typed_content);
        assert_eq!(numbered.audio_placeholder.as_deref(), Some("<A>"));
    }

    #[test]
    fn a_template_that_loops_for_ever_runs_out_of_fuel() {
        let src = "{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}\
                   {% endfor %}{% endfor %}{% endfor %}";
        let start = std::time::Instant::now();
        let err = render(src, json!({})).unwrap_err();
        println!("{err} after {:?}", start.elapsed());
        assert!(
            matches!(&err, ChatError::Render(m) if m.contains("fuel")),
            "{err}"
        );
    }

    #[test]
    fn unbounded_recursion_is_stopped() {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let err = render(src, json!({})).unwrap_err();
        assert!(
            matches!(&err, ChatError::Render(m) if m.contains("recursion")),
            "{err}"
        );
        let src = "{% for x in xs recursive %}{{ loop(xs) }}{% endfor %}";
        assert!(render(src, json!({"xs": [1]})).is_err());
    }

    #[test]
    fn a_template_that_writes_gigabytes_is_cut_off() {
        // 100 MB a print (minijinja's own cap on string repetition), for ever.
        let src = "{% for a in range(100000) %}{{ 'x' * 100000000 }}{% endfor %}";
        let start = std::time::Instant::now();
        let err = render(src, json!({})).unwrap_err();
        println!("{err} after {:?}", start.elapsed());
        assert!(
            matches!(&err, ChatError::Render(m) if m.contains("exceeds")),
            "{err}"
        );
        // Small pieces add up the same way.
        let src = "{% for a in range(100000) %}{% for b in range(1000) %}{{ 'y' * 1000 }}\
                   {% endfor %}{% endfor %}";
        assert!(render(src, json!({})).is_err());
    }

    #[test]
    fn real_templates_use_little_fuel() {
        let tool = json!({"type": "function", "function": {"name": "get_weather",
            "description": "Weather of a city", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"]}}});
        let messages: Vec<Json> = (0..200)
            .map(|i| {
                let role = if i % 2 == 0 { "user" } else { "assistant" };
                json!({"role": role, "content": format!("message {i} with some words in it")})
            })
            .collect();
        let mut most = 0;
        for fixture in [
            "gemma3",
            "qwen2vl",
            "qwen3vl",
            "idefics3",
            "pixtral",
            "mistral3",
            "voxtral",
            "qwen2audio",
        ] {
            let file =
                gguf::GgufFile::open(testkit::fixture(&format!("{fixture}/model.gguf"))).unwrap();
            let Some(src) = file.opt_str("tokenizer.chat_template").unwrap() else {
                continue;
            };
            let tmpl = JinjaTemplate::new(src).unwrap();
            let ctx = template_context(
                messages.clone(),
                true,
                "<s>",
                "</s>",
                Some(&[tool.clone(), tool.clone()]),
                &Map::new(),
            );
            let t = tmpl.env.get_template(TEMPLATE_NAME).unwrap();
            let Ok(captured) = t.render_captured(Value::from(Serde(&ctx))) else {
                // Some templates refuse tools or this shape of conversation: not a fuel matter.
                continue;
            };
            let (used, _) = captured.state().fuel_levels().unwrap();
            println!("{fixture}: {used} instructions for 200 messages and 2 tools");
            most = most.max(used);
        }
        assert!(most > 0);
        assert!(most < MAX_FUEL / 10, "{most}");
    }

    #[test]
    fn finds_tag_runs() {
        assert_eq!(
            tag_runs("Audio 1: <|a|><|B|><|c|>\n x <y> [IMG][/IMG] < no> [ ] <>"),
            vec!["<|a|><|B|><|c|>", "<y>", "[IMG][/IMG]"]
        );
        assert!(tag_runs("plain < text [").is_empty());
    }
}
