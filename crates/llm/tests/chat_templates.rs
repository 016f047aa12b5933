//! Chat templates against references:
//! - the real models' `generate.json` prompts (llama.cpp's rendering), exactly;
//! - the tiny fixtures' real templates (Qwen2-VL/2.5-VL/3-VL, Gemma 3, Mistral, SmolVLM,
//!   Qwen2-Audio, Voxtral) against their `prompt.txt` (HF processor output with the media marker);
//! - conversations with tools, tool calls and odd characters against Python Jinja2 configured
//!   as HF transformers' `apply_chat_template` (the expected texts below were produced that way).

use std::path::PathBuf;

use gguf::GgufFile;
use llm::chat::{ChatError, ChatMessage, ChatTemplate, ContentPart, MessageContent, RenderOptions};
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    testkit::fixture("")
}

use testkit::real_model;

fn fixture_template(name: &str) -> ChatTemplate {
    let path = fixtures().join(name).join("model.gguf");
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ChatTemplate::from_gguf(&file).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn check_generate_json(model_file: &str, folder: &str) {
    let Some(path) = real_model(model_file) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let template = ChatTemplate::from_gguf(&file).unwrap();
    let reference: Json = serde_json::from_str(&read(
        fixtures()
            .join("real-text")
            .join(folder)
            .join("generate.json"),
    ))
    .unwrap();
    let prompts = reference["prompts"].as_array().unwrap();
    assert_eq!(prompts.len(), 4);
    for (i, case) in prompts.iter().enumerate() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let got = template.render(&messages, true).unwrap();
        assert_eq!(
            got,
            case["rendered_prompt"].as_str().unwrap(),
            "{folder} prompt {i}"
        );
    }
}

#[test]
fn chat_gemma3_270m_matches_llama_cpp() {
    check_generate_json("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m");
}

#[test]
fn chat_qwen25_coder_matches_llama_cpp() {
    check_generate_json(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
    );
}

/// The Qwen2.5 template is also in generate.json, so it is checked without the model too.
#[test]
fn chat_qwen25_template_text_without_model() {
    let folder = fixtures().join("real-text/qwen2.5-coder-0.5b-instruct-q4_k_m");
    let reference: Json = serde_json::from_str(&read(folder.join("generate.json"))).unwrap();
    let template = ChatTemplate::from_jinja(reference["chat_template"]["source"].as_str().unwrap())
        .unwrap()
        .with_special_tokens("<|endoftext|>", "<|im_end|>", false, false);
    for case in reference["prompts"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        assert_eq!(
            template.render(&messages, true).unwrap(),
            case["rendered_prompt"].as_str().unwrap()
        );
    }
}

fn media_message(media: Vec<ContentPart>, text: &str) -> Vec<ChatMessage> {
    let mut parts = media;
    parts.push(ContentPart::text(text));
    vec![ChatMessage::with_content(
        "user",
        MessageContent::Parts(parts),
    )]
}

/// One image (or audio clip) and a question, as the fixtures' prompt.txt was made.
#[test]
fn chat_fixture_templates_match_prompt_txt() {
    let image = || ContentPart::image_url("data:image/png;base64,iVBORw0KGgo=");
    let audio = || ContentPart::input_audio("UklGRg==", "wav");
    let cases = [
        ("gemma3", image(), "Describe this image."),
        ("qwen2vl", image(), "Describe this image."),
        ("qwen25vl", image(), "Describe this image."),
        ("qwen3vl", image(), "Describe this image."),
        ("idefics3", image(), "Describe this image in detail."),
        (
            "mistral3",
            image(),
            "What is shown in the picture? Answer briefly.",
        ),
        ("pixtral", image(), "Describe this image in detail."),
        (
            "qwen2audio",
            audio(),
            "What do you hear in this audio clip?",
        ),
        ("voxtral", audio(), "What do you hear in this audio clip?"),
    ];
    for (name, media, question) in cases {
        let template = fixture_template(name);
        let got = template
            .render(&media_message(vec![media], question), true)
            .unwrap();
        assert_eq!(
            got,
            read(fixtures().join(name).join("prompt.txt")),
            "{name}"
        );
        assert_eq!(got.matches("<__media__>").count(), 1, "{name}");
    }
}

#[test]
fn chat_fixture_templates_two_images() {
    let image = || ContentPart::image_url("data:image/png;base64,iVBORw0KGgo=");
    let question = "What is different between these pictures?";
    // Qwen's templates number pictures when asked to (HF's add_vision_id).
    for name in ["qwen2vl", "qwen25vl", "qwen3vl"] {
        let template = fixture_template(name);
        let mut options = RenderOptions {
            add_generation_prompt: true,
            ..RenderOptions::default()
        };
        options
            .extra
            .insert("add_vision_id".into(), Json::Bool(true));
        let got = template
            .render_with(&media_message(vec![image(), image()], question), &options)
            .unwrap();
        assert_eq!(
            got,
            read(fixtures().join(name).join("prompt_two_images.txt")),
            "{name}"
        );
    }
    // Gemma's prompt was written with the markers in plain text.
    let template = fixture_template("gemma3");
    let text = format!("Picture 1: <__media__>\nPicture 2: <__media__>\n{question}");
    let got = template.render(&[ChatMessage::user(text)], true).unwrap();
    assert_eq!(got, read(fixtures().join("gemma3/prompt_two_images.txt")));
}

#[test]
fn chat_fixture_templates_render_plain_text() {
    for name in [
        "gemma3",
        "idefics3",
        "mistral3",
        "pixtral",
        "qwen25vl",
        "qwen2audio",
        "qwen2vl",
        "qwen3vl",
        "voxtral",
    ] {
        let template = fixture_template(name);
        let got = template
            .render(&[ChatMessage::user("Hello")], true)
            .unwrap();
        assert!(got.contains("Hello"), "{name}: {got:?}");
        assert!(!got.contains("<__media__>"), "{name}");
    }
    // BOS text is left to the tokenizer when it adds one (Gemma's template writes it first).
    let gemma = fixture_template("gemma3")
        .render(&[ChatMessage::user("Hello")], true)
        .unwrap();
    assert_eq!(
        gemma,
        "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"
    );
}

/// Cases rendered by Python Jinja2 set up as HF transformers does (trim_blocks, lstrip_blocks,
/// loopcontrols, `tojson = json.dumps(ensure_ascii=False)`, `raise_exception`), with the leading
/// BOS text removed when the GGUF's tokenizer adds BOS (llama.cpp's rule).
const JINJA2_CASES: &str = r##"[
 {
  "name": "qwen2.5 tools",
  "fixture": "qwen2.5",
  "messages": [
   {
    "role": "system",
    "content": "You are terse."
   },
   {
    "role": "user",
    "content": "Weather in Zürich? <now> & 'later'"
   },
   {
    "role": "assistant",
    "content": "",
    "tool_calls": [
     {
      "type": "function",
      "function": {
       "name": "get_weather",
       "arguments": {
        "city": "Zürich",
        "days": 2
       }
      },
      "id": "call_1"
     }
    ]
   },
   {
    "role": "tool",
    "content": "{\"temp\": 21.5, \"sky\": \"clear\"}",
    "tool_call_id": "call_1",
    "name": "get_weather"
   },
   {
    "role": "user",
    "content": "Thanks!"
   }
  ],
  "tools": [
   {
    "type": "function",
    "function": {
     "name": "get_weather",
     "description": "Weather for a city — 'quoted' <b>bold</b> & more, 日本",
     "parameters": {
      "type": "object",
      "properties": {
       "city": {
        "type": "string",
        "enum": [
         "Paris",
         "Zürich"
        ]
       },
       "days": {
        "type": "integer",
        "minimum": 1.5
       }
      },
      "required": [
       "city"
      ]
     }
    }
   }
  ],
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<|im_start|>system\nYou are terse.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather for a city — 'quoted' <b>bold</b> & more, 日本\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"enum\": [\"Paris\", \"Zürich\"]}, \"days\": {\"type\": \"integer\", \"minimum\": 1.5}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Zürich? <now> & 'later'<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": 2}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 21.5, \"sky\": \"clear\"}\n</tool_response><|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n"
 },
 {
  "name": "qwen2.5 multi",
  "fixture": "qwen2.5",
  "messages": [
   {
    "role": "system",
    "content": "Be brief."
   },
   {
    "role": "user",
    "content": "  Hi there  "
   },
   {
    "role": "assistant",
    "content": "Hello!"
   },
   {
    "role": "user",
    "content": "Bye"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": false,
  "ok": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi there  <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
 },
 {
  "name": "qwen3vl tools",
  "fixture": "qwen3vl",
  "messages": [
   {
    "role": "system",
    "content": "You are terse."
   },
   {
    "role": "user",
    "content": "Weather in Zürich? <now> & 'later'"
   },
   {
    "role": "assistant",
    "content": "",
    "tool_calls": [
     {
      "type": "function",
      "function": {
       "name": "get_weather",
       "arguments": {
        "city": "Zürich",
        "days": 2
       }
      },
      "id": "call_1"
     }
    ]
   },
   {
    "role": "tool",
    "content": "{\"temp\": 21.5, \"sky\": \"clear\"}",
    "tool_call_id": "call_1",
    "name": "get_weather"
   },
   {
    "role": "user",
    "content": "Thanks!"
   }
  ],
  "tools": [
   {
    "type": "function",
    "function": {
     "name": "get_weather",
     "description": "Weather for a city — 'quoted' <b>bold</b> & more, 日本",
     "parameters": {
      "type": "object",
      "properties": {
       "city": {
        "type": "string",
        "enum": [
         "Paris",
         "Zürich"
        ]
       },
       "days": {
        "type": "integer",
        "minimum": 1.5
       }
      },
      "required": [
       "city"
      ]
     }
    }
   }
  ],
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<|im_start|>system\nYou are terse.\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather for a city — 'quoted' <b>bold</b> & more, 日本\", \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"enum\": [\"Paris\", \"Zürich\"]}, \"days\": {\"type\": \"integer\", \"minimum\": 1.5}}, \"required\": [\"city\"]}}}\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n<|im_start|>user\nWeather in Zürich? <now> & 'later'<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Zürich\", \"days\": 2}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n{\"temp\": 21.5, \"sky\": \"clear\"}\n</tool_response><|im_end|>\n<|im_start|>user\nThanks!<|im_end|>\n<|im_start|>assistant\n"
 },
 {
  "name": "qwen3vl multi",
  "fixture": "qwen3vl",
  "messages": [
   {
    "role": "system",
    "content": "Be brief."
   },
   {
    "role": "user",
    "content": "  Hi there  "
   },
   {
    "role": "assistant",
    "content": "Hello!"
   },
   {
    "role": "user",
    "content": "Bye"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi there  <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
 },
 {
  "name": "qwen2vl multi",
  "fixture": "qwen2vl",
  "messages": [
   {
    "role": "system",
    "content": "Be brief."
   },
   {
    "role": "user",
    "content": "  Hi there  "
   },
   {
    "role": "assistant",
    "content": "Hello!"
   },
   {
    "role": "user",
    "content": "Bye"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi there  <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
 },
 {
  "name": "gemma3 multi",
  "fixture": "gemma3",
  "messages": [
   {
    "role": "system",
    "content": "Be brief."
   },
   {
    "role": "user",
    "content": "  Hi there  "
   },
   {
    "role": "assistant",
    "content": "Hello!"
   },
   {
    "role": "user",
    "content": "Bye"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
 },
 {
  "name": "gemma3 not alternating",
  "fixture": "gemma3",
  "messages": [
   {
    "role": "user",
    "content": "a"
   },
   {
    "role": "user",
    "content": "b"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "raised": "Conversation roles must alternate user/assistant/user/assistant/..."
 },
 {
  "name": "mistral3 multi",
  "fixture": "mistral3",
  "messages": [
   {
    "role": "system",
    "content": "Be brief."
   },
   {
    "role": "user",
    "content": "  Hi there  "
   },
   {
    "role": "assistant",
    "content": "Hello!"
   },
   {
    "role": "user",
    "content": "Bye"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "ok": "[INST]  Hi there  [/INST]Hello!</s>[INST]Be brief.\n\nBye[/INST]"
 },
 {
  "name": "qwen2audio multi",
  "fixture": "qwen2audio",
  "messages": [
   {
    "role": "system",
    "content": "Be brief."
   },
   {
    "role": "user",
    "content": "  Hi there  "
   },
   {
    "role": "assistant",
    "content": "Hello!"
   },
   {
    "role": "user",
    "content": "Bye"
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n  Hi there  <|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
 },
 {
  "name": "idefics3 typed",
  "fixture": "idefics3",
  "messages": [
   {
    "role": "user",
    "content": [
     {
      "type": "text",
      "text": "Hi"
     }
    ]
   },
   {
    "role": "assistant",
    "content": [
     {
      "type": "text",
      "text": "Yo"
     }
    ]
   },
   {
    "role": "user",
    "content": [
     {
      "type": "text",
      "text": "Again"
     }
    ]
   }
  ],
  "tools": null,
  "extra": {},
  "add_generation_prompt": true,
  "ok": "<|im_start|>User: Hi<end_of_utterance>\nAssistant: Yo<end_of_utterance>\nUser: Again<end_of_utterance>\nAssistant:"
 }
]"##;

#[test]
fn chat_templates_match_python_jinja2() {
    let qwen25_source = {
        let path = fixtures().join("real-text/qwen2.5-coder-0.5b-instruct-q4_k_m/generate.json");
        let reference: Json = serde_json::from_str(&read(path)).unwrap();
        reference["chat_template"]["source"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let cases: Vec<Json> = serde_json::from_str(JINJA2_CASES).unwrap();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let template = match case["fixture"].as_str().unwrap() {
            "qwen2.5" => ChatTemplate::from_jinja(&qwen25_source)
                .unwrap()
                .with_special_tokens("<|endoftext|>", "<|im_end|>", false, false),
            fixture => fixture_template(fixture),
        };
        let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
        let options = RenderOptions {
            add_generation_prompt: case["add_generation_prompt"].as_bool().unwrap(),
            tools: case["tools"].as_array().cloned(),
            extra: case["extra"].as_object().cloned().unwrap_or_default(),
        };
        let got = template.render_with(&messages, &options);
        match (case.get("ok"), case.get("raised")) {
            (Some(want), _) => assert_eq!(got.unwrap(), want.as_str().unwrap(), "{name}"),
            (_, Some(want)) => match got {
                Err(ChatError::Raised(msg)) => assert_eq!(msg, want.as_str().unwrap(), "{name}"),
                other => panic!("{name}: expected a raised exception, got {other:?}"),
            },
            _ => panic!("{name}: case without expectation"),
        }
    }
}
