//! The published dimensions of the models `mtmd synth` imitates, as data.
//!
//! Figures come from each model's HF `config.json` (text and vision/audio sections) and the
//! values llama.cpp's converter derives from them; the key sets and tensor names per family
//! follow the converter's output on the tiny fixtures in `tests/fixtures/`.

/// Text architectures, by the tensors and keys the converter writes for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextArch {
    Gemma3,
    /// Qwen2-VL and Qwen2.5-VL text towers (`qwen2vl`, M-RoPE, q/k/v biases).
    Qwen2Vl,
    /// `qwen3vl`: q/k norms, interleaved M-RoPE, deepstack.
    Qwen3Vl,
    /// `llama` (Pixtral, SmolVLM and Voxtral text towers).
    Llama,
    Mistral3,
    /// `qwen2` (Qwen2-Audio's text tower).
    Qwen2,
}

impl TextArch {
    pub fn gguf_name(self) -> &'static str {
        match self {
            TextArch::Gemma3 => "gemma3",
            TextArch::Qwen2Vl => "qwen2vl",
            TextArch::Qwen3Vl => "qwen3vl",
            TextArch::Llama => "llama",
            TextArch::Mistral3 => "mistral3",
            TextArch::Qwen2 => "qwen2",
        }
    }
}

/// Tokenizer families: the layout of special tokens and the tokenizer keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece-style (`llama` model) with byte fallback and Gemma's control tokens.
    Gemma3,
    /// Byte-level BPE, Qwen specials after the normal tokens, `[PAD…]` up to the vocab size.
    Qwen2Vl,
    Qwen3Vl,
    Qwen2Audio,
    /// Byte-level BPE with Mistral's 1000 leading control tokens (`pre` differs per model).
    Tekken {
        pre: &'static str,
        audio: bool,
        tool_args: bool,
    },
    /// SmolLM2's byte-level BPE with Idefics3's image tokens.
    SmolLm,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TextSpec {
    pub arch: TextArch,
    pub vocab: VocabKind,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_vocab: usize,
    pub n_ctx_train: u32,
    pub rope_base: f32,
    pub rms_eps: f32,
    /// `tie_word_embeddings`: no `output.weight` in the file.
    pub tied: bool,
    /// Qwen2-VL M-RoPE sections (t, y, x, 0).
    pub rope_sections: [i32; 4],
    /// Gemma 3: sliding window, its rope base, linear rope scaling factor.
    pub sliding_window: u32,
    pub rope_base_swa: f32,
    pub rope_scale: f32,
    /// Qwen3-VL: deepstack slices the encoder appends.
    pub n_deepstack: usize,
}

/// Encoder (mmproj) families, named after `clip.projector_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncoderKind {
    Gemma3,
    Qwen2Vl,
    Qwen25Vl,
    Qwen3Vl,
    Pixtral,
    /// Mistral Small 3.1: Pixtral encoder + RMS input norm + 2x2 patch merger.
    Mistral3,
    Idefics3,
    Qwen2Audio,
    Voxtral,
}

impl EncoderKind {
    pub fn projector_type(self) -> &'static str {
        match self {
            EncoderKind::Gemma3 => "gemma3",
            EncoderKind::Qwen2Vl => "qwen2vl_merger",
            EncoderKind::Qwen25Vl => "qwen2.5vl_merger",
            EncoderKind::Qwen3Vl => "qwen3vl_merger",
            EncoderKind::Pixtral | EncoderKind::Mistral3 => "pixtral",
            EncoderKind::Idefics3 => "idefics3",
            EncoderKind::Qwen2Audio => "qwen2a",
            EncoderKind::Voxtral => "voxtral",
        }
    }

    pub fn is_audio(self) -> bool {
        matches!(self, EncoderKind::Qwen2Audio | EncoderKind::Voxtral)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EncoderSpec {
    pub kind: EncoderKind,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub eps: f32,
    /// Vision: patch size, the image size the converter writes, mean/std.
    pub patch: usize,
    pub image_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Learned position embeddings (rows); 0 when the family has none.
    pub n_pos: usize,
    /// Gemma3/Idefics3 pooling or pixel-shuffle factor; Qwen/Mistral spatial merge.
    pub merge: usize,
    /// Qwen2.5-VL: full attention every `n_wa_pattern` layers.
    pub n_wa_pattern: usize,
    /// Qwen3-VL: encoder layers feeding the deepstack mergers.
    pub deepstack: Vec<usize>,
    /// Idefics3: `preproc_image_size` (the longest edge before tiling).
    pub preproc_image_size: usize,
    /// Audio: mel bins, frames stacked by the Voxtral projector.
    pub n_mel: usize,
    pub stack_factor: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    /// The model the dimensions come from (`general.name` says `synth <this>`).
    pub source: &'static str,
    pub text: TextSpec,
    pub encoder: EncoderSpec,
    /// A Jinja template, or a llama.cpp built-in template name.
    pub chat_template: &'static str,
}

pub const NAMES: [&str; 9] = [
    "gemma3-4b",
    "qwen2-vl-2b",
    "qwen2.5-vl-3b",
    "qwen3-vl-2b",
    "pixtral-12b",
    "mistral-small-3.1",
    "smolvlm-256m",
    "qwen2-audio-7b",
    "voxtral-mini-3b",
];

const CLIP_MEAN: [f32; 3] = [0.481_454_67, 0.457_827_5, 0.408_210_72];
const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];
const HALF: [f32; 3] = [0.5, 0.5, 0.5];

fn text(arch: TextArch, vocab: VocabKind) -> TextSpec {
    TextSpec {
        arch,
        vocab,
        n_layer: 0,
        n_embd: 0,
        n_ff: 0,
        n_head: 0,
        n_head_kv: 0,
        head_dim: 0,
        n_vocab: 0,
        n_ctx_train: 0,
        rope_base: 10_000.0,
        rms_eps: 1e-6,
        tied: false,
        rope_sections: [0; 4],
        sliding_window: 0,
        rope_base_swa: 0.0,
        rope_scale: 1.0,
        n_deepstack: 0,
    }
}

fn encoder(kind: EncoderKind) -> EncoderSpec {
    EncoderSpec {
        kind,
        n_layer: 0,
        n_embd: 0,
        n_ff: 0,
        n_head: 0,
        eps: 1e-6,
        patch: 0,
        image_size: 0,
        mean: HALF,
        std: HALF,
        n_pos: 0,
        merge: 0,
        n_wa_pattern: 0,
        deepstack: Vec::new(),
        preproc_image_size: 0,
        n_mel: 0,
        stack_factor: 0,
    }
}

/// Whisper-large-v3's encoder, shared by Qwen2-Audio and Voxtral.
fn whisper(kind: EncoderKind) -> EncoderSpec {
    EncoderSpec {
        n_layer: 32,
        n_embd: 1280,
        n_ff: 5120,
        n_head: 20,
        eps: 1e-5,
        n_pos: 1500,
        n_mel: 128,
        stack_factor: if kind == EncoderKind::Voxtral { 4 } else { 0 },
        ..encoder(kind)
    }
}

/// Mistral's Pixtral vision tower (1024 wide, 24 layers).
fn pixtral_vision(kind: EncoderKind, patch: usize, image_size: usize) -> EncoderSpec {
    EncoderSpec {
        n_layer: 24,
        n_embd: 1024,
        n_ff: 4096,
        n_head: 16,
        eps: 1e-5,
        patch,
        image_size,
        mean: CLIP_MEAN,
        std: CLIP_STD,
        merge: if kind == EncoderKind::Mistral3 { 2 } else { 0 },
        ..encoder(kind)
    }
}

fn qwen_vocab_text(arch: TextArch, vocab: VocabKind) -> TextSpec {
    TextSpec {
        n_vocab: 151_936,
        rope_base: 1_000_000.0,
        tied: true,
        ..text(arch, vocab)
    }
}

/// The preset called `name`, or `None`.
pub fn preset(name: &str) -> Option<Preset> {
    let p = match name {
        "gemma3-4b" => Preset {
            name: "gemma3-4b",
            source: "gemma-3-4b-it",
            text: TextSpec {
                n_layer: 34,
                n_embd: 2560,
                n_ff: 10_240,
                n_head: 8,
                n_head_kv: 4,
                head_dim: 256,
                n_vocab: 262_208,
                n_ctx_train: 131_072,
                rope_base: 1_000_000.0,
                tied: true,
                sliding_window: 1024,
                rope_base_swa: 10_000.0,
                rope_scale: 8.0,
                ..text(TextArch::Gemma3, VocabKind::Gemma3)
            },
            encoder: EncoderSpec {
                n_layer: 27,
                n_embd: 1152,
                n_ff: 4304,
                n_head: 16,
                patch: 14,
                image_size: 896,
                n_pos: 4096,
                merge: 4,
                ..encoder(EncoderKind::Gemma3)
            },
            chat_template: include_str!("synth_templates/gemma3.jinja"),
        },
        "qwen2-vl-2b" => Preset {
            name: "qwen2-vl-2b",
            source: "Qwen2-VL-2B-Instruct",
            text: TextSpec {
                n_layer: 28,
                n_embd: 1536,
                n_ff: 8960,
                n_head: 12,
                n_head_kv: 2,
                head_dim: 128,
                n_ctx_train: 32_768,
                rope_sections: [16, 24, 24, 0],
                ..qwen_vocab_text(TextArch::Qwen2Vl, VocabKind::Qwen2Vl)
            },
            encoder: EncoderSpec {
                n_layer: 32,
                n_embd: 1280,
                n_ff: 5120,
                n_head: 16,
                patch: 14,
                image_size: 560,
                mean: CLIP_MEAN,
                std: CLIP_STD,
                merge: 2,
                ..encoder(EncoderKind::Qwen2Vl)
            },
            chat_template: include_str!("synth_templates/qwen2vl.jinja"),
        },
        "qwen2.5-vl-3b" => Preset {
            name: "qwen2.5-vl-3b",
            source: "Qwen2.5-VL-3B-Instruct",
            text: TextSpec {
                n_layer: 36,
                n_embd: 2048,
                n_ff: 11_008,
                n_head: 16,
                n_head_kv: 2,
                head_dim: 128,
                n_ctx_train: 128_000,
                rope_sections: [16, 24, 24, 0],
                ..qwen_vocab_text(TextArch::Qwen2Vl, VocabKind::Qwen2Vl)
            },
            encoder: EncoderSpec {
                n_layer: 32,
                n_embd: 1280,
                n_ff: 3420,
                n_head: 16,
                patch: 14,
                image_size: 560,
                mean: CLIP_MEAN,
                std: CLIP_STD,
                merge: 2,
                // fullatt_block_indexes 7, 15, 23, 31
                n_wa_pattern: 8,
                ..encoder(EncoderKind::Qwen25Vl)
            },
            chat_template: include_str!("synth_templates/qwen2vl.jinja"),
        },
        "qwen3-vl-2b" => Preset {
            name: "qwen3-vl-2b",
            source: "Qwen3-VL-2B-Instruct",
            text: TextSpec {
                n_layer: 28,
                n_embd: 2048,
                n_ff: 6144,
                n_head: 16,
                n_head_kv: 8,
                head_dim: 128,
                n_ctx_train: 262_144,
                rope_base: 5_000_000.0,
                rope_sections: [24, 20, 20, 0],
                n_deepstack: 3,
                ..qwen_vocab_text(TextArch::Qwen3Vl, VocabKind::Qwen3Vl)
            },
            encoder: EncoderSpec {
                n_layer: 24,
                n_embd: 1024,
                n_ff: 4096,
                n_head: 16,
                patch: 16,
                // sqrt(num_position_embeddings 2304) * patch
                image_size: 768,
                n_pos: 2304,
                merge: 2,
                deepstack: vec![5, 11, 17],
                ..encoder(EncoderKind::Qwen3Vl)
            },
            chat_template: include_str!("synth_templates/qwen3vl.jinja"),
        },
        "pixtral-12b" => Preset {
            name: "pixtral-12b",
            source: "pixtral-12b",
            text: TextSpec {
                n_layer: 40,
                n_embd: 5120,
                n_ff: 14_336,
                n_head: 32,
                n_head_kv: 8,
                head_dim: 128,
                n_vocab: 131_072,
                n_ctx_train: 1_024_000,
                rope_base: 1_000_000_000.0,
                rms_eps: 1e-5,
                ..text(
                    TextArch::Llama,
                    VocabKind::Tekken {
                        pre: "pixtral",
                        audio: false,
                        tool_args: false,
                    },
                )
            },
            encoder: pixtral_vision(EncoderKind::Pixtral, 16, 1024),
            chat_template: include_str!("synth_templates/pixtral.jinja"),
        },
        "mistral-small-3.1" => Preset {
            name: "mistral-small-3.1",
            source: "Mistral-Small-3.1-24B-Instruct-2503",
            text: TextSpec {
                n_layer: 40,
                n_embd: 5120,
                n_ff: 32_768,
                n_head: 32,
                n_head_kv: 8,
                head_dim: 128,
                n_vocab: 131_072,
                n_ctx_train: 131_072,
                rope_base: 1_000_000_000.0,
                rms_eps: 1e-5,
                ..text(
                    TextArch::Mistral3,
                    VocabKind::Tekken {
                        pre: "tekken",
                        audio: false,
                        tool_args: true,
                    },
                )
            },
            encoder: pixtral_vision(EncoderKind::Mistral3, 14, 1540),
            // The Pixtral template; Mistral Small 3.1's own one is longer (tools, dates).
            chat_template: include_str!("synth_templates/pixtral.jinja"),
        },
        "smolvlm-256m" => Preset {
            name: "smolvlm-256m",
            source: "SmolVLM-256M-Instruct",
            text: TextSpec {
                n_layer: 30,
                n_embd: 576,
                n_ff: 1536,
                n_head: 9,
                n_head_kv: 3,
                head_dim: 64,
                n_vocab: 49_280,
                n_ctx_train: 8192,
                rope_base: 100_000.0,
                rms_eps: 1e-5,
                tied: true,
                ..text(TextArch::Llama, VocabKind::SmolLm)
            },
            encoder: EncoderSpec {
                n_layer: 12,
                n_embd: 768,
                n_ff: 3072,
                n_head: 12,
                patch: 16,
                image_size: 512,
                n_pos: 1024,
                merge: 4,
                preproc_image_size: 2048,
                ..encoder(EncoderKind::Idefics3)
            },
            chat_template: include_str!("synth_templates/smolvlm.jinja"),
        },
        "qwen2-audio-7b" => Preset {
            name: "qwen2-audio-7b",
            source: "Qwen2-Audio-7B-Instruct",
            text: TextSpec {
                n_layer: 32,
                n_embd: 4096,
                n_ff: 11_008,
                n_head: 32,
                n_head_kv: 32,
                head_dim: 128,
                n_vocab: 156_032,
                n_ctx_train: 8192,
                rope_base: 10_000.0,
                rms_eps: 1e-5,
                ..text(TextArch::Qwen2, VocabKind::Qwen2Audio)
            },
            encoder: whisper(EncoderKind::Qwen2Audio),
            chat_template: include_str!("synth_templates/qwen2audio.jinja"),
        },
        "voxtral-mini-3b" => Preset {
            name: "voxtral-mini-3b",
            source: "Voxtral-Mini-3B-2507",
            text: TextSpec {
                n_layer: 30,
                n_embd: 3072,
                n_ff: 8192,
                n_head: 32,
                n_head_kv: 8,
                head_dim: 128,
                n_vocab: 131_072,
                n_ctx_train: 131_072,
                rope_base: 100_000_000.0,
                rms_eps: 1e-5,
                ..text(
                    TextArch::Llama,
                    VocabKind::Tekken {
                        pre: "tekken",
                        audio: true,
                        tool_args: true,
                    },
                )
            },
            encoder: whisper(EncoderKind::Voxtral),
            // What the converter writes for Voxtral: llama.cpp's built-in template name.
            chat_template: "mistral-v7-tekken",
        },
        _ => return None,
    };
    Some(p)
}
