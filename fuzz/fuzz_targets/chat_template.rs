//! Hostile chat templates and messages: `template source \0 messages JSON`. Compiling and
//! rendering must end (fuel, recursion limit) with bounded output (64 MiB cap), never panic.
//! A source of at most two bytes picks one of llama.cpp's built-in formats instead.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm::chat::{BuiltinFormat, ChatMessage, ChatTemplate, RenderOptions};

fn default_messages() -> Vec<ChatMessage> {
    serde_json::from_str(
        r#"[{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Thanks"}]"#,
    )
    .expect("valid messages")
}

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (source, rest) = data.split_at(split);
    let rest = rest.get(1..).unwrap_or_default();
    let messages: Vec<ChatMessage> =
        serde_json::from_slice(rest).unwrap_or_else(|_| default_messages());
    let template = if source.len() <= 2 {
        let names: Vec<&str> = BuiltinFormat::all_names().collect();
        let pick = source.iter().map(|&b| usize::from(b)).sum::<usize>() % names.len();
        ChatTemplate::builtin(names[pick])
    } else {
        let Ok(source) = std::str::from_utf8(source) else {
            return;
        };
        ChatTemplate::from_jinja(source)
    };
    let Ok(template) = template else {
        return;
    };
    let template = template.with_special_tokens("<s>", "</s>", true, false);
    let options = RenderOptions {
        add_generation_prompt: rest.len() % 2 == 0,
        ..RenderOptions::default()
    };
    if let Ok(text) = template.render_with(&messages, &options) {
        assert!(text.len() <= llm::chat::jinja::MAX_OUTPUT_BYTES);
    }
});
