//! llama.cpp's built-in chat formats (`llama_chat_apply_template`), used when a GGUF carries no
//! Jinja template, and the detection of which one a model wants.
//!
//! These formats only see role + text: multi-part content is joined (media as the marker) first.

use super::message::{ChatMessage, content_text};

/// A built-in format, named as llama.cpp names it (`--chat-template NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BuiltinFormat {
    ChatMl,
    Llama2,
    Llama2Sys,
    Llama2SysBos,
    Llama2SysStrip,
    MistralV1,
    MistralV3,
    MistralV3Tekken,
    MistralV7,
    MistralV7Tekken,
    Phi3,
    Phi4,
    Falcon3,
    Zephyr,
    Monarch,
    Gemma,
    OpenChat,
    Vicuna,
    VicunaOrca,
    DeepSeek,
    DeepSeek2,
    DeepSeek3,
    CommandR,
    Llama3,
    Llama4,
    Exaone3,
    Granite,
    SmolVlm,
}

const NAMES: &[(&str, BuiltinFormat)] = &[
    ("chatml", BuiltinFormat::ChatMl),
    ("llama2", BuiltinFormat::Llama2),
    ("llama2-sys", BuiltinFormat::Llama2Sys),
    ("llama2-sys-bos", BuiltinFormat::Llama2SysBos),
    ("llama2-sys-strip", BuiltinFormat::Llama2SysStrip),
    ("mistral-v1", BuiltinFormat::MistralV1),
    ("mistral-v3", BuiltinFormat::MistralV3),
    ("mistral-v3-tekken", BuiltinFormat::MistralV3Tekken),
    ("mistral-v7", BuiltinFormat::MistralV7),
    ("mistral-v7-tekken", BuiltinFormat::MistralV7Tekken),
    ("phi3", BuiltinFormat::Phi3),
    ("phi4", BuiltinFormat::Phi4),
    ("falcon3", BuiltinFormat::Falcon3),
    ("zephyr", BuiltinFormat::Zephyr),
    ("monarch", BuiltinFormat::Monarch),
    ("gemma", BuiltinFormat::Gemma),
    ("openchat", BuiltinFormat::OpenChat),
    ("vicuna", BuiltinFormat::Vicuna),
    ("vicuna-orca", BuiltinFormat::VicunaOrca),
    ("deepseek", BuiltinFormat::DeepSeek),
    ("deepseek2", BuiltinFormat::DeepSeek2),
    ("deepseek3", BuiltinFormat::DeepSeek3),
    ("command-r", BuiltinFormat::CommandR),
    ("llama3", BuiltinFormat::Llama3),
    ("llama4", BuiltinFormat::Llama4),
    ("exaone3", BuiltinFormat::Exaone3),
    ("granite", BuiltinFormat::Granite),
    ("smolvlm", BuiltinFormat::SmolVlm),
];

const DEEPSEEK_EOS: &str = "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>";
const DEEPSEEK_USER: &str = "<\u{ff5c}User\u{ff5c}>";
const DEEPSEEK_ASSISTANT: &str = "<\u{ff5c}Assistant\u{ff5c}>";

impl BuiltinFormat {
    /// The format called `name` (llama.cpp's names), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map(|(n, _)| *n)
            .unwrap_or("chatml")
    }

    /// Every known name, for error messages and `--help`.
    pub fn all_names() -> impl Iterator<Item = &'static str> {
        NAMES.iter().map(|(n, _)| *n)
    }

    /// Guesses the format from a template's text by the markers it contains (llama.cpp's
    /// heuristics), for a template that names a format or that should not be run as Jinja.
    pub fn detect_from_template(tmpl: &str) -> Option<Self> {
        if let Some(f) = Self::from_name(tmpl.trim()) {
            return Some(f);
        }
        let has = |s: &str| tmpl.contains(s);
        use BuiltinFormat::*;
        let format = if has("<|im_start|>") {
            if has("<|im_sep|>") {
                Phi4
            } else if has("<end_of_utterance>") {
                SmolVlm
            } else {
                ChatMl
            }
        } else if tmpl.starts_with("mistral") || has("[INST]") {
            if has("[SYSTEM_PROMPT]") {
                MistralV7
            } else if has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]") {
                if has(" [INST]") {
                    MistralV1
                } else if has("\"[INST]\"") {
                    MistralV3Tekken
                } else {
                    MistralV3
                }
            } else if has("content.strip()") {
                Llama2SysStrip
            } else if has("bos_token + '[INST]") {
                Llama2SysBos
            } else if has("<<SYS>>") {
                Llama2Sys
            } else {
                Llama2
            }
        } else if has("<|assistant|>") && has("<|end|>") {
            Phi3
        } else if has("<|assistant|>") && has("<|user|>") && has("</s>") {
            Falcon3
        } else if has("<|user|>") && has("<|endoftext|>") {
            Zephyr
        } else if has("bos_token + message['role']") {
            Monarch
        } else if has("<start_of_turn>") {
            Gemma
        } else if has("GPT4 Correct ") {
            OpenChat
        } else if has("USER: ") && has("ASSISTANT: ") {
            if has("SYSTEM: ") { VicunaOrca } else { Vicuna }
        } else if has("### Instruction:") && has("<|EOT|>") {
            DeepSeek
        } else if has("<|START_OF_TURN_TOKEN|>") && has("<|USER_TOKEN|>") {
            CommandR
        } else if has("<|start_header_id|>") && has("<|end_header_id|>") {
            Llama3
        } else if has("'Assistant: ' + message['content'] + eos_token") {
            DeepSeek2
        } else if has(DEEPSEEK_ASSISTANT) && has(DEEPSEEK_USER) && has(DEEPSEEK_EOS) {
            DeepSeek3
        } else if has("[|system|]") && has("[|assistant|]") && has("[|endofturn|]") {
            Exaone3
        } else if has("<|start_of_role|>") {
            Granite
        } else if has("<|header_start|>") && has("<|header_end|>") {
            Llama4
        } else {
            return None;
        };
        Some(format)
    }

    /// The format a model without a template most likely wants, from its architecture and the
    /// special tokens in its vocabulary; `None` when nothing matches (callers use ChatML).
    pub fn detect_from_model(
        arch: &str,
        tokens: &[&str],
        tokenizer_pre: Option<&str>,
    ) -> Option<Self> {
        let has = |t: &str| tokens.contains(&t);
        use BuiltinFormat::*;
        if arch.starts_with("gemma") || has("<start_of_turn>") {
            return Some(Gemma);
        }
        if has("<|im_start|>") {
            return Some(if has("<|im_sep|>") {
                Phi4
            } else if has("<end_of_utterance>") {
                SmolVlm
            } else {
                ChatMl
            });
        }
        if has("<|header_start|>") {
            return Some(Llama4);
        }
        if has("<|start_header_id|>") {
            return Some(Llama3);
        }
        if has("[INST]") {
            let tekken = tokenizer_pre == Some("tekken");
            return Some(match (has("[SYSTEM_PROMPT]"), tekken) {
                (true, true) => MistralV7Tekken,
                (true, false) => MistralV7,
                (false, true) => MistralV3Tekken,
                (false, false) => MistralV3,
            });
        }
        if arch == "phi3" || (has("<|assistant|>") && has("<|end|>")) {
            return Some(Phi3);
        }
        if has("<|START_OF_TURN_TOKEN|>") {
            return Some(CommandR);
        }
        if has("<|start_of_role|>") {
            return Some(Granite);
        }
        if has(DEEPSEEK_USER) && has(DEEPSEEK_ASSISTANT) {
            return Some(DeepSeek3);
        }
        if has("<|user|>") && has("<|endoftext|>") {
            return Some(Zephyr);
        }
        None
    }

    /// Renders `messages` (`add_generation_prompt`: end with the opening of an assistant turn).
    pub fn render(
        self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        marker: &str,
    ) -> String {
        let chat: Vec<(&str, String)> = messages
            .iter()
            .map(|m| (m.role.as_str(), content_text(&m.content, marker)))
            .collect();
        let mut out = String::new();
        use BuiltinFormat::*;
        match self {
            ChatMl => {
                for (role, content) in &chat {
                    out += &format!("<|im_start|>{role}\n{content}<|im_end|>\n");
                }
                if add_generation_prompt {
                    out += "<|im_start|>assistant\n";
                }
            }
            MistralV7 | MistralV7Tekken => {
                let sp = if self == MistralV7 { " " } else { "" };
                for (role, content) in &chat {
                    out += &match *role {
                        "system" => format!("[SYSTEM_PROMPT]{sp}{content}[/SYSTEM_PROMPT]"),
                        "user" => format!("[INST]{sp}{content}[/INST]"),
                        _ => format!("{sp}{content}</s>"),
                    };
                }
            }
            MistralV1 | MistralV3 | MistralV3Tekken => render_mistral_v1_v3(self, &chat, &mut out),
            Llama2 | Llama2Sys | Llama2SysBos | Llama2SysStrip => {
                render_llama2(self, &chat, &mut out)
            }
            Phi3 | Falcon3 | Zephyr => {
                let end = match self {
                    Phi3 => "<|end|>\n",
                    Falcon3 => "\n",
                    _ => "<|endoftext|>\n",
                };
                for (role, content) in &chat {
                    out += &format!("<|{role}|>\n{content}{end}");
                }
                if add_generation_prompt {
                    out += "<|assistant|>\n";
                }
            }
            Phi4 => {
                for (role, content) in &chat {
                    out += &format!("<|im_start|>{role}<|im_sep|>{content}<|im_end|>");
                }
                if add_generation_prompt {
                    out += "<|im_start|>assistant<|im_sep|>";
                }
            }
            Monarch => {
                for (i, (role, content)) in chat.iter().enumerate() {
                    let bos = if i == 0 { "" } else { "<s>" };
                    out += &format!("{bos}{role}\n{content}</s>\n");
                }
                if add_generation_prompt {
                    out += "<s>assistant\n";
                }
            }
            Gemma => render_gemma(&chat, add_generation_prompt, &mut out),
            OpenChat => {
                for (role, content) in &chat {
                    if *role == "system" {
                        out += &format!("{content}<|end_of_turn|>");
                    } else {
                        out += &format!(
                            "GPT4 Correct {}: {content}<|end_of_turn|>",
                            capitalize_first(role)
                        );
                    }
                }
                if add_generation_prompt {
                    out += "GPT4 Correct Assistant:";
                }
            }
            Vicuna | VicunaOrca => {
                for (role, content) in &chat {
                    match *role {
                        "system" if self == VicunaOrca => out += &format!("SYSTEM: {content}\n"),
                        "system" => out += &format!("{content}\n\n"),
                        "user" => out += &format!("USER: {content}\n"),
                        "assistant" => out += &format!("ASSISTANT: {content}</s>\n"),
                        _ => {}
                    }
                }
                if add_generation_prompt {
                    out += "ASSISTANT:";
                }
            }
            DeepSeek => {
                for (role, content) in &chat {
                    match *role {
                        "system" => out += content,
                        "user" => out += &format!("### Instruction:\n{content}\n"),
                        "assistant" => out += &format!("### Response:\n{content}\n<|EOT|>\n"),
                        _ => {}
                    }
                }
                if add_generation_prompt {
                    out += "### Response:\n";
                }
            }
            DeepSeek2 => {
                for (role, content) in &chat {
                    match *role {
                        "system" => out += &format!("{content}\n\n"),
                        "user" => out += &format!("User: {content}\n\n"),
                        "assistant" => out += &format!("Assistant: {content}{DEEPSEEK_EOS}"),
                        _ => {}
                    }
                }
                if add_generation_prompt {
                    out += "Assistant:";
                }
            }
            DeepSeek3 => {
                for (role, content) in &chat {
                    match *role {
                        "system" => out += &format!("{content}\n\n"),
                        "user" => out += &format!("{DEEPSEEK_USER}{content}"),
                        "assistant" => {
                            out += &format!("{DEEPSEEK_ASSISTANT}{content}{DEEPSEEK_EOS}")
                        }
                        _ => {}
                    }
                }
                if add_generation_prompt {
                    out += DEEPSEEK_ASSISTANT;
                }
            }
            CommandR => {
                for (role, content) in &chat {
                    let token = match *role {
                        "system" => "<|SYSTEM_TOKEN|>",
                        "user" => "<|USER_TOKEN|>",
                        "assistant" => "<|CHATBOT_TOKEN|>",
                        _ => continue,
                    };
                    out += &format!(
                        "<|START_OF_TURN_TOKEN|>{token}{}<|END_OF_TURN_TOKEN|>",
                        trim_c(content)
                    );
                }
                if add_generation_prompt {
                    out += "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>";
                }
            }
            Llama3 => {
                for (role, content) in &chat {
                    out += &format!(
                        "<|start_header_id|>{role}<|end_header_id|>\n\n{}<|eot_id|>",
                        trim_c(content)
                    );
                }
                if add_generation_prompt {
                    out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
                }
            }
            Llama4 => {
                for (role, content) in &chat {
                    out += &format!(
                        "<|header_start|>{role}<|header_end|>\n\n{}<|eot|>",
                        trim_c(content)
                    );
                }
                if add_generation_prompt {
                    out += "<|header_start|>assistant<|header_end|>\n\n";
                }
            }
            Exaone3 => {
                for (role, content) in &chat {
                    let content = trim_c(content);
                    match *role {
                        "system" => out += &format!("[|system|]{content}[|endofturn|]\n"),
                        "user" => out += &format!("[|user|]{content}\n"),
                        "assistant" => out += &format!("[|assistant|]{content}[|endofturn|]\n"),
                        _ => {}
                    }
                }
                if add_generation_prompt {
                    out += "[|assistant|]";
                }
            }
            Granite => {
                for (role, content) in &chat {
                    out += &format!("<|start_of_role|>{role}<|end_of_role|>");
                    if *role == "assistant_tool_call" {
                        out += "<|tool_call|>";
                    }
                    out += &format!("{content}<|end_of_text|>\n");
                }
                if add_generation_prompt {
                    out += "<|start_of_role|>assistant<|end_of_role|>\n";
                }
            }
            SmolVlm => {
                // <|im_start|> opens the text once (it is SmolVLM's BOS); the turns are not ChatML.
                out += "<|im_start|>";
                for (role, content) in &chat {
                    match *role {
                        "system" => out += &format!("{content}\n\n"),
                        "user" => out += &format!("User: {content}<end_of_utterance>\n"),
                        _ => out += &format!("Assistant: {content}<end_of_utterance>\n"),
                    }
                }
                if add_generation_prompt {
                    out += "Assistant:";
                }
            }
        }
        out
    }
}

/// Gemma has no system role: a system message is merged into the next user turn; the
/// assistant is called `model`; contents are trimmed. BOS is left to the tokenizer.
fn render_gemma(chat: &[(&str, String)], add_generation_prompt: bool, out: &mut String) {
    let mut system = String::new();
    for (role, content) in chat {
        if *role == "system" {
            system += trim_c(content);
            continue;
        }
        let role = if *role == "assistant" { "model" } else { role };
        *out += &format!("<start_of_turn>{role}\n");
        if !system.is_empty() && role != "model" {
            *out += &format!("{system}\n\n");
            system.clear();
        }
        *out += &format!("{}<end_of_turn>\n", trim_c(content));
    }
    if add_generation_prompt {
        *out += "<start_of_turn>model\n";
    }
}

fn render_mistral_v1_v3(format: BuiltinFormat, chat: &[(&str, String)], out: &mut String) {
    let leading = if format == BuiltinFormat::MistralV1 {
        " "
    } else {
        ""
    };
    let trailing = if format == BuiltinFormat::MistralV3Tekken {
        ""
    } else {
        " "
    };
    let trim_assistant = format == BuiltinFormat::MistralV3;
    let mut in_turn = false;
    for (role, content) in chat {
        if !in_turn {
            *out += &format!("{leading}[INST]{trailing}");
            in_turn = true;
        }
        match *role {
            "system" => *out += &format!("{content}\n\n"),
            "user" => *out += &format!("{content}{leading}[/INST]"),
            _ => {
                let content = if trim_assistant {
                    trim_c(content)
                } else {
                    content
                };
                *out += &format!("{trailing}{content}</s>");
                in_turn = false;
            }
        }
    }
}

fn render_llama2(format: BuiltinFormat, chat: &[(&str, String)], out: &mut String) {
    let system_supported = format != BuiltinFormat::Llama2;
    let bos_in_history = format == BuiltinFormat::Llama2SysBos;
    let strip = format == BuiltinFormat::Llama2SysStrip;
    // The opening BOS is the tokenizer's; later turns may carry their own.
    let mut in_turn = true;
    *out += "[INST] ";
    for (role, content) in chat {
        let content = if strip {
            trim_c(content)
        } else {
            content.as_str()
        };
        if !in_turn {
            in_turn = true;
            *out += if bos_in_history {
                "<s>[INST] "
            } else {
                "[INST] "
            };
        }
        match *role {
            "system" if system_supported => *out += &format!("<<SYS>>\n{content}\n<</SYS>>\n\n"),
            "system" => *out += &format!("{content}\n"),
            "user" => *out += &format!("{content} [/INST]"),
            _ => {
                *out += &format!("{content}</s>");
                in_turn = false;
            }
        }
    }
}

/// Trims the ASCII whitespace C's `isspace` knows (llama.cpp's trim), not Unicode spaces.
fn trim_c(s: &str) -> &str {
    s.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\u{b}' | '\u{c}' | '\r'))
}

fn capitalize_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> Vec<ChatMessage> {
        vec![
            ChatMessage::system("Be brief."),
            ChatMessage::user(" Hi "),
            ChatMessage::assistant("Hello!"),
            ChatMessage::user("Bye"),
        ]
    }

    #[test]
    fn names_round_trip() {
        for name in BuiltinFormat::all_names() {
            let f = BuiltinFormat::from_name(name).unwrap();
            assert_eq!(f.name(), name);
        }
        assert_eq!(BuiltinFormat::from_name("nope"), None);
    }

    #[test]
    fn gemma_merges_system_and_trims() {
        let got = BuiltinFormat::Gemma.render(&conv(), true, "<__media__>");
        assert_eq!(
            got,
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
        );
    }

    #[test]
    fn chatml_llama3_mistral() {
        let msgs = &conv()[1..2];
        assert_eq!(
            BuiltinFormat::ChatMl.render(msgs, true, ""),
            "<|im_start|>user\n Hi <|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            BuiltinFormat::Llama3.render(msgs, true, ""),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let all = conv();
        assert_eq!(
            BuiltinFormat::MistralV7Tekken.render(&all, true, ""),
            "[SYSTEM_PROMPT]Be brief.[/SYSTEM_PROMPT][INST] Hi [/INST]Hello!</s>[INST]Bye[/INST]"
        );
        assert_eq!(
            BuiltinFormat::MistralV3.render(&all, true, ""),
            "[INST] Be brief.\n\n Hi [/INST] Hello!</s>[INST] Bye[/INST]"
        );
        assert_eq!(
            BuiltinFormat::MistralV1.render(&all, true, ""),
            " [INST] Be brief.\n\n Hi  [/INST] Hello!</s> [INST] Bye [/INST]"
        );
        assert_eq!(
            BuiltinFormat::Llama2Sys.render(&all, true, ""),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi  [/INST]Hello!</s>[INST] Bye [/INST]"
        );
    }

    #[test]
    fn detection() {
        assert_eq!(
            BuiltinFormat::detect_from_template("mistral-v7-tekken"),
            Some(BuiltinFormat::MistralV7Tekken)
        );
        assert_eq!(
            BuiltinFormat::detect_from_template("{{'<|im_start|>'}}"),
            Some(BuiltinFormat::ChatMl)
        );
        assert_eq!(BuiltinFormat::detect_from_template("{{ x }}"), None);
        let gemma = ["<bos>", "<start_of_turn>", "<end_of_turn>"];
        assert_eq!(
            BuiltinFormat::detect_from_model("gemma3", &gemma, None),
            Some(BuiltinFormat::Gemma)
        );
        let qwen = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
        assert_eq!(
            BuiltinFormat::detect_from_model("qwen2", &qwen, None),
            Some(BuiltinFormat::ChatMl)
        );
        let llama3 = ["<|begin_of_text|>", "<|start_header_id|>"];
        assert_eq!(
            BuiltinFormat::detect_from_model("llama", &llama3, None),
            Some(BuiltinFormat::Llama3)
        );
        let tekken = ["<s>", "[INST]", "[SYSTEM_PROMPT]"];
        assert_eq!(
            BuiltinFormat::detect_from_model("llama", &tekken, Some("tekken")),
            Some(BuiltinFormat::MistralV7Tekken)
        );
        assert_eq!(
            BuiltinFormat::detect_from_model("llama", &["<s>"], None),
            None
        );
    }
}
