//! Hyper-parameters of a text model, read from `<arch>.*` GGUF keys, and the per-architecture
//! differences of the shared decoder expressed as data.

use crate::error::{LlmError, Result};
use gguf::{GgufFile, Value};
use tensor::ops::rope::RopeMode;

/// Architectures the shared decoder runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// llama, mistral and the text towers of Pixtral / Idefics3 / SmolVLM.
    Llama,
    /// Mistral-Small-3.1 style (`mistral3`): llama with optional temperature tuning.
    Mistral3,
    Qwen2,
    /// Qwen2-VL and Qwen2.5-VL text models (M-RoPE).
    Qwen2Vl,
    Qwen3,
    /// Qwen3-VL (interleaved M-RoPE, deepstack inputs).
    Qwen3Vl,
    Gemma3,
}

pub const SUPPORTED: &str = "llama, mistral3, qwen2, qwen2vl, qwen3, qwen3vl, gemma3";

impl Arch {
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(match name {
            "llama" | "mistral" => Arch::Llama,
            "mistral3" => Arch::Mistral3,
            "qwen2" => Arch::Qwen2,
            "qwen2vl" => Arch::Qwen2Vl,
            "qwen3" => Arch::Qwen3,
            "qwen3vl" => Arch::Qwen3Vl,
            "gemma3" => Arch::Gemma3,
            other => return Err(LlmError::UnknownArchitecture(other.into(), SUPPORTED)),
        })
    }

    /// ggml's rope type for the architecture.
    fn rope_mode(self, sections: [usize; 4]) -> RopeMode {
        match self {
            Arch::Llama | Arch::Mistral3 => RopeMode::Normal,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 => RopeMode::Neox,
            Arch::Qwen2Vl => RopeMode::MultiSection { sections },
            Arch::Qwen3Vl => RopeMode::Imrope { sections },
        }
    }

    /// True when positions carry 4 components (t, y, x, e) and the causal mask is
    /// lexicographic over (t, y, x) as llama.cpp's KV cache does it.
    pub fn uses_mrope(self) -> bool {
        matches!(self, Arch::Qwen2Vl | Arch::Qwen3Vl)
    }
}

/// Feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnAct {
    /// silu(gate) * up
    SwiGlu,
    /// gelu_tanh(gate) * up
    GeGlu,
}

#[derive(Debug, Clone)]
pub struct HParams {
    pub arch: Arch,
    pub arch_name: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub n_ctx_train: usize,
    pub rms_eps: f32,
    pub rope_mode: RopeMode,
    pub rope_base: f32,
    pub rope_scale: f32,
    /// Rope base/scale of sliding-window layers (Gemma 3 uses different ones).
    pub rope_base_swa: f32,
    pub rope_scale_swa: f32,
    /// Sliding window size; `swa_layers[i]` says whether layer i uses it.
    pub n_swa: Option<usize>,
    pub swa_layers: Vec<bool>,
    /// Scale applied to Q before attention (Gemma) instead of inside the softmax.
    pub q_prescale: Option<f32>,
    /// Softmax scale of attention scores.
    pub attn_scale: f32,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Token embeddings are multiplied by this (Gemma: sqrt(n_embd)); media embeddings are not.
    pub embed_scale: Option<f32>,
    pub ffn_act: FfnAct,
    /// Qwen3-VL: number of deepstack feature slices appended to media embeddings.
    pub n_deepstack: usize,
}

/// Reads `key` as one u32, or the first element of a per-layer array when all elements agree.
fn u32_or_uniform_array(file: &GgufFile, key: &str) -> Result<Option<u32>> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::Array(arr)) => {
            let vals: Vec<u64> = arr.items.iter().filter_map(|v| v.as_u64()).collect();
            if vals.is_empty()
                || vals.len() != arr.items.len()
                || vals.iter().any(|&v| v != vals[0])
            {
                return Err(LlmError::BadParam {
                    key: key.into(),
                    detail: "per-layer values that differ are not supported".into(),
                });
            }
            Ok(Some(vals[0] as u32))
        }
        Some(_) => Ok(Some(file.get_u32(key)?)),
    }
}

fn positive(key: &str, v: Option<u32>) -> Result<usize> {
    match v {
        Some(v) if v > 0 => Ok(v as usize),
        Some(_) => Err(LlmError::BadParam {
            key: key.into(),
            detail: "must be > 0".into(),
        }),
        None => Err(LlmError::Gguf(gguf::GgufError::MissingKey {
            key: key.to_string(),
        })),
    }
}

impl HParams {
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch_name = file.get_str("general.architecture")?.to_string();
        let arch = Arch::from_name(&arch_name)?;
        let k = |s: &str| format!("{arch_name}.{s}");

        let n_layer = positive(
            &k("block_count"),
            u32_or_uniform_array(file, &k("block_count"))?,
        )?;
        let n_embd = positive(
            &k("embedding_length"),
            u32_or_uniform_array(file, &k("embedding_length"))?,
        )?;
        let n_ff = positive(
            &k("feed_forward_length"),
            u32_or_uniform_array(file, &k("feed_forward_length"))?,
        )?;
        let n_head = positive(
            &k("attention.head_count"),
            u32_or_uniform_array(file, &k("attention.head_count"))?,
        )?;
        let n_head_kv = match u32_or_uniform_array(file, &k("attention.head_count_kv"))? {
            Some(v) => positive(&k("attention.head_count_kv"), Some(v))?,
            None => n_head,
        };
        if n_head % n_head_kv != 0 {
            return Err(LlmError::BadParam {
                key: k("attention.head_count_kv"),
                detail: format!("{n_head} query heads are not a multiple of {n_head_kv} kv heads"),
            });
        }
        let head_dim = match file.opt_u32(&k("attention.key_length"))? {
            Some(v) => positive(&k("attention.key_length"), Some(v))?,
            None => n_embd / n_head,
        };
        if let Some(v) = file.opt_u32(&k("attention.value_length"))?
            && v as usize != head_dim
        {
            return Err(LlmError::BadParam {
                key: k("attention.value_length"),
                detail: format!("value length {v} differs from key length {head_dim}"),
            });
        }
        let n_rot = match file.opt_u32(&k("rope.dimension_count"))? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(LlmError::BadParam {
                key: k("rope.dimension_count"),
                detail: format!("{n_rot} rotated dims with head size {head_dim}"),
            });
        }
        let n_ctx_train = file.opt_u32(&k("context_length"))?.unwrap_or(4096) as usize;
        let rms_eps = file
            .opt_f32(&k("attention.layer_norm_rms_epsilon"))?
            .unwrap_or(1e-6);
        let rope_base = file.opt_f32(&k("rope.freq_base"))?.unwrap_or(10000.0);
        let rope_scale = match file.opt_f32(&k("rope.scaling.factor"))? {
            Some(f) if f != 0.0 => 1.0 / f,
            _ => 1.0,
        };
        let mut sections = [0usize; 4];
        if let Some(arr) = file.opt_array(&k("rope.dimension_sections"))? {
            for (slot, v) in sections.iter_mut().zip(arr.items.iter()) {
                *slot = v.as_u64().unwrap_or(0) as usize;
            }
        } else if arch.uses_mrope() {
            return Err(LlmError::BadParam {
                key: k("rope.dimension_sections"),
                detail: "M-RoPE models need rope sections".into(),
            });
        }
        let rope_mode = arch.rope_mode(sections);

        let n_swa = file
            .opt_u32(&k("attention.sliding_window"))?
            .filter(|&w| w > 0)
            .map(|w| w as usize);
        let mut swa_layers = vec![false; n_layer];
        let (mut rope_base_swa, mut rope_scale_swa) = (rope_base, rope_scale);
        let mut q_prescale = None;
        let mut attn_scale = 1.0 / (head_dim as f32).sqrt();
        let mut embed_scale = None;
        let mut ffn_act = FfnAct::SwiGlu;
        if arch == Arch::Gemma3 {
            // llama.cpp: every 6th layer is global, the rest use the sliding window with
            // their own rope base and no rope scaling.
            if n_swa.is_some() {
                for (il, swa) in swa_layers.iter_mut().enumerate() {
                    *swa = il % 6 < 5;
                }
            }
            rope_base_swa = file.opt_f32(&k("rope.freq_base_swa"))?.unwrap_or(10000.0);
            rope_scale_swa = 1.0;
            // llama.cpp follows gemma_pytorch: the 27B model (62 layers) scales by
            // n_embd / n_head instead of the head size.
            let scale_dim = if n_layer == 62 {
                n_embd / n_head
            } else {
                head_dim
            };
            q_prescale = Some(1.0 / (scale_dim as f32).sqrt());
            attn_scale = 1.0;
            embed_scale = Some((n_embd as f32).sqrt());
            ffn_act = FfnAct::GeGlu;
        } else if let Some(s) = file.opt_f32(&k("attention.scale"))?
            && s != 0.0
        {
            attn_scale = s;
        }
        let attn_softcap = file
            .opt_f32(&k("attn_logit_softcapping"))?
            .filter(|&c| c != 0.0);
        let final_softcap = file
            .opt_f32(&k("final_logit_softcapping"))?
            .filter(|&c| c != 0.0);
        let n_deepstack = file.opt_u32(&k("n_deepstack_layers"))?.unwrap_or(0) as usize;
        if n_deepstack >= n_layer && n_deepstack > 0 {
            return Err(LlmError::BadParam {
                key: k("n_deepstack_layers"),
                detail: format!(
                    "{n_deepstack} deepstack layers need more than {n_layer} text layers"
                ),
            });
        }

        Ok(Self {
            arch,
            arch_name,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            n_ctx_train,
            rms_eps,
            rope_mode,
            rope_base,
            rope_scale,
            rope_base_swa,
            rope_scale_swa,
            n_swa,
            swa_layers,
            q_prescale,
            attn_scale,
            attn_softcap,
            final_softcap,
            embed_scale,
            ffn_act,
            n_deepstack,
        })
    }

    /// Width of an embedding row given to the decoder (Qwen3-VL appends deepstack slices).
    pub fn n_embd_inp(&self) -> usize {
        self.n_embd * (1 + self.n_deepstack)
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}
