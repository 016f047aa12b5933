use super::*;
use gguf::{Array, GgufWriter, MappedBytes, Value, ValueType};
use serde_json::json;

const QWEN2VL_LIKE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}\
{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or 'image' in content %}\
<|vision_start|><|image_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n\
{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

fn gguf_with(kvs: Vec<(&str, Value)>) -> GgufFile {
    let mut w = GgufWriter::new();
    for (k, v) in kvs {
        w.add_kv(k, v);
    }
    GgufFile::from_bytes(MappedBytes::from_vec(w.to_bytes())).unwrap()
}

fn tokens(list: &[&str]) -> Value {
    Value::Array(Array::new(
        ValueType::String,
        list.iter()
            .map(|t| Value::String((*t).to_owned()))
            .collect(),
    ))
}

fn image_message(text: &str) -> ChatMessage {
    ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::image_url("data:image/png;base64,AA"),
            ContentPart::text(text),
        ]),
    )
}

#[test]
fn builtin_by_name() {
    let t = ChatTemplate::builtin("gemma").unwrap();
    assert_eq!(t.builtin_format(), Some(BuiltinFormat::Gemma));
    assert!(matches!(
        ChatTemplate::builtin("gemmaa"),
        Err(ChatError::UnknownBuiltin { .. })
    ));
}

#[test]
fn gguf_without_template_detects_format() {
    let file = gguf_with(vec![
        ("general.architecture", Value::String("gemma3".into())),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            tokens(&[
                "<pad>",
                "<eos>",
                "<bos>",
                "<start_of_turn>",
                "<end_of_turn>",
            ]),
        ),
        ("tokenizer.ggml.bos_token_id", Value::U32(2)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
    ]);
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert_eq!(t.builtin_format(), Some(BuiltinFormat::Gemma));
    assert_eq!(t.bos_token(), "<bos>");
    let out = t.render(&[ChatMessage::user("Hi")], true).unwrap();
    assert_eq!(
        out,
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
    );

    let unknown = gguf_with(vec![(
        "general.architecture",
        Value::String("llama".into()),
    )]);
    assert_eq!(
        ChatTemplate::from_gguf(&unknown).unwrap().builtin_format(),
        Some(BuiltinFormat::ChatMl)
    );
}

#[test]
fn gguf_template_naming_a_builtin() {
    let file = gguf_with(vec![(
        "tokenizer.chat_template",
        Value::String("mistral-v7-tekken".into()),
    )]);
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert_eq!(t.builtin_format(), Some(BuiltinFormat::MistralV7Tekken));
    let out = t.render(&[image_message("What?")], true).unwrap();
    assert_eq!(out, "[INST]<__media__>What?[/INST]");
}

#[test]
fn leading_bos_is_stripped_when_the_tokenizer_adds_it() {
    let src = "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}{{ eos_token }}";
    let file = gguf_with(vec![
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", tokens(&["<s>", "</s>"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eos_token_id", Value::U32(1)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.chat_template", Value::String(src.into())),
    ]);
    let t = ChatTemplate::from_gguf(&file).unwrap();
    assert_eq!(
        t.render(&[ChatMessage::user("x")], false).unwrap(),
        "[x]</s>"
    );
    let kept = ChatTemplate::from_jinja(src)
        .unwrap()
        .with_special_tokens("<s>", "</s>", false, true);
    assert_eq!(
        kept.render(&[ChatMessage::user("x")], false).unwrap(),
        "<s>[x]"
    );
}

#[test]
fn native_image_placeholder_becomes_marker() {
    let t = ChatTemplate::from_jinja(QWEN2VL_LIKE).unwrap();
    let jinja = t.jinja().unwrap();
    assert!(jinja.supports_string_content && jinja.supports_typed_content);
    assert_eq!(
        jinja.image_placeholder.as_deref(),
        Some("<|vision_start|><|image_pad|><|vision_end|>")
    );
    let out = t.render(&[image_message("Describe.")], true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\n<__media__>Describe.<|im_end|>\n<|im_start|>assistant\n"
    );

    let custom = ChatTemplate::from_jinja(QWEN2VL_LIKE)
        .unwrap()
        .with_media_marker("<M>");
    let out = custom.render(&[image_message("a")], false).unwrap();
    assert_eq!(out, "<|im_start|>user\n<M>a<|im_end|>\n");
}

#[test]
fn placeholder_clash_falls_back_to_marker_text() {
    // The user literally typed the placeholder: counting would be off, so media go in as text.
    let t = ChatTemplate::from_jinja(QWEN2VL_LIKE).unwrap();
    let msg = ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::text("<|vision_start|><|image_pad|><|vision_end|>"),
            ContentPart::image(),
        ]),
    );
    let out = t.render(&[msg], false).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|><__media__><|im_end|>\n"
    );
}

#[test]
fn string_only_template_gets_joined_parts() {
    let t = ChatTemplate::from_jinja(
        "{% for m in messages %}{{ m.role }}: {{ m.content | trim }}\n{% endfor %}",
    )
    .unwrap();
    let msg = ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::text("one"),
            ContentPart::text("two"),
            ContentPart::image(),
            ContentPart::text("three"),
        ]),
    );
    assert_eq!(
        t.render(&[msg], false).unwrap(),
        "user: one\ntwo<__media__>three\n"
    );
}

#[test]
fn tools_and_extra_kwargs_reach_the_template() {
    let src = "{% if tools is not none %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}\
               {% if enable_thinking is defined and enable_thinking is false %}no-think{% endif %}";
    let t = ChatTemplate::from_jinja(src).unwrap();
    assert_eq!(t.render(&[ChatMessage::user("x")], false).unwrap(), "");
    let mut extra = Map::new();
    extra.insert("enable_thinking".into(), json!(false));
    let opts = RenderOptions {
        add_generation_prompt: true,
        tools: Some(vec![
            json!({"type": "function", "function": {"name": "f", "description": "ça <b>"}}),
        ]),
        extra,
    };
    assert_eq!(
        t.render_with(&[ChatMessage::user("x")], &opts).unwrap(),
        "{\"type\": \"function\", \"function\": {\"name\": \"f\", \"description\": \"ça <b>\"}}\nno-think"
    );
}

#[test]
fn raise_exception_surfaces_as_typed_error() {
    let src = "{% for m in messages %}{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}\
               {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% endfor %}";
    let t = ChatTemplate::from_jinja(src).unwrap();
    let err = t
        .render(&[ChatMessage::user("a"), ChatMessage::user("b")], true)
        .unwrap_err();
    assert!(
        matches!(&err, ChatError::Raised(m) if m.starts_with("Conversation roles must alternate"))
    );
    assert!(err.to_string().contains("rejected the conversation"));
}

#[test]
fn optional_message_fields_are_passed_through() {
    let src = "{% for m in messages %}{{ m.role }}|{{ 'tool_calls' in m }}|{{ m.reasoning_content }}|{{ m.name }}|\
               {% if m.tool_calls %}{{ m.tool_calls[0].function.arguments | tojson }}{% endif %}{{ '\\n' }}{% endfor %}";
    let t = ChatTemplate::from_jinja(src).unwrap();
    let msgs: Vec<ChatMessage> = serde_json::from_value(json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": null, "reasoning_content": "hmm",
         "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]},
        {"role": "tool", "name": "f", "tool_call_id": "0", "content": "1"},
    ]))
    .unwrap();
    assert_eq!(
        t.render(&msgs, false).unwrap(),
        "user|False|||\nassistant|True|hmm||{\"x\": 1}\ntool|False||f|\n"
    );
}

#[test]
fn templates_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ChatTemplate>();
    assert_send_sync::<crate::sampling::Sampler>();
    assert_send_sync::<crate::stop::StopMatcher>();
}
