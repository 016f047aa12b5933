//! Encoder hyper-parameters from the `clip.*` metadata of an mmproj GGUF (llama.cpp's key names):
//! `clip.vision.*` for an image encoder, `clip.audio.*` for an audio encoder.

use gguf::GgufFile;

use crate::ClipError;
use crate::projector::Modality;

/// Activation of the ViT feed-forward blocks, from `clip.use_gelu` / `clip.use_silu`
/// (llama.cpp: neither flag means quick GELU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FfnAct {
    Gelu,
    Silu,
    GeluQuick,
    /// Exact GELU (`x·Φ(x)` through erf): Whisper-style audio encoders (llama.cpp forces it).
    GeluErf,
}

/// Everything the encoders read from `clip.vision.*` / `clip.audio.*` and `clip.*`.
#[derive(Clone, Debug)]
pub struct EncoderHparams {
    /// Which encoder of the file these describe (a file may hold a vision and an audio one).
    pub modality: Modality,
    pub projector_type: String,
    pub image_size: usize,
    pub patch_size: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub eps: f32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Width of the projector output (the text model's n_embd).
    pub projection_dim: usize,
    /// Tokens merged per side (Qwen spatial merge, Gemma3 pooling kernel); 0 when absent.
    pub n_merge: usize,
    /// Qwen2.5-VL: every `n_wa_pattern`-th layer uses full attention, the rest window attention.
    pub n_wa_pattern: usize,
    /// Qwen2.5-VL window size in pixels (0: llama.cpp's default of 112).
    pub window_size: usize,
    /// Qwen3-VL: which layers feed a deepstack merger.
    pub deepstack_layers: Vec<bool>,
    pub ffn_act: FfnAct,
    /// `clip.vision.preproc_image_size`: the longest edge tiling projectors (Idefics3) resize
    /// to before cutting tiles; 0 when absent.
    pub image_longest_edge: usize,
    /// Audio: mel bins of the encoder input (`clip.audio.num_mel_bins`); 0 for vision.
    pub n_mel_bins: usize,
    /// Audio: frames stacked into one token by the projector (`clip.audio.projector.stack_factor`).
    pub stack_factor: usize,
}

fn positive(key: &str, v: u32) -> Result<usize, ClipError> {
    // Bounds keep later size arithmetic far from overflow on hostile files.
    if v == 0 || v > 1 << 20 {
        return Err(ClipError::BadValue {
            key: key.into(),
            detail: format!("{v} is not in 1..=1048576"),
        });
    }
    Ok(v as usize)
}

fn rgb(file: &GgufFile, key: &str, default: [f32; 3]) -> Result<[f32; 3], ClipError> {
    let Some(arr) = file.opt_array(key)? else {
        return Ok(default);
    };
    let vals = arr.as_f32s().unwrap_or_default();
    vals.try_into().map_err(|v: Vec<f32>| ClipError::BadValue {
        key: key.into(),
        detail: format!("expected 3 floats, got {} values", v.len()),
    })
}

impl EncoderHparams {
    /// The file's vision encoder when it has one, else its audio encoder.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ClipError> {
        let has_vision = file.opt_bool("clip.has_vision_encoder")?;
        let has_audio = file.opt_bool("clip.has_audio_encoder")?.unwrap_or(false);
        if has_vision != Some(true) && has_audio {
            return Self::for_modality(file, Modality::Audio);
        }
        if has_vision == Some(false) {
            return Err(ClipError::NoVisionEncoder);
        }
        Self::for_modality(file, Modality::Vision)
    }

    /// The hyper-parameters of the file's encoder of `modality`.
    pub fn for_modality(file: &GgufFile, modality: Modality) -> Result<Self, ClipError> {
        let m = match modality {
            Modality::Vision => "vision",
            Modality::Audio => "audio",
        };
        let projector_type = match file.opt_str(&format!("clip.{m}.projector_type"))? {
            Some(p) => p,
            None => file.get_str("clip.projector_type")?,
        }
        .to_owned();
        let req = |key: &str| -> Result<usize, ClipError> { positive(key, file.get_u32(key)?) };
        let opt = |key: &str| -> Result<usize, ClipError> {
            Ok(file.opt_u32(key)?.map(|v| v as usize).unwrap_or(0))
        };
        let key = |k: &str| format!("clip.{m}.{k}");
        let n_embd = req(&key("embedding_length"))?;
        let n_head = req(&key("attention.head_count"))?;
        if !n_embd.is_multiple_of(n_head) {
            return Err(ClipError::BadValue {
                key: key("attention.head_count"),
                detail: format!("{n_head} heads do not divide embedding_length {n_embd}"),
            });
        }
        let n_layer = req(&key("block_count"))?;
        let deepstack_layers = match file.opt_array("clip.vision.is_deepstack_layers")? {
            Some(a) => a.as_bools().ok_or_else(|| ClipError::BadValue {
                key: "clip.vision.is_deepstack_layers".into(),
                detail: "not an array of bools".into(),
            })?,
            None => Vec::new(),
        };
        let use_gelu = file.opt_bool("clip.use_gelu")?.unwrap_or(false);
        let use_silu = file.opt_bool("clip.use_silu")?.unwrap_or(false);
        let ffn_act = match (use_gelu, use_silu) {
            (true, true) => {
                return Err(ClipError::BadValue {
                    key: "clip.use_gelu".into(),
                    detail: "both clip.use_gelu and clip.use_silu are set".into(),
                });
            }
            (true, false) => FfnAct::Gelu,
            (false, true) => FfnAct::Silu,
            (false, false) => FfnAct::GeluQuick,
        };
        let mut n_merge = opt("clip.vision.spatial_merge_size")?;
        if n_merge == 0 {
            n_merge = opt("clip.vision.projector.scale_factor")?;
        }
        let vision = modality == Modality::Vision;
        let (image_size, patch_size, n_mel_bins) = if vision {
            (
                req("clip.vision.image_size")?,
                req("clip.vision.patch_size")?,
                0,
            )
        } else {
            (0, 1, req("clip.audio.num_mel_bins")?)
        };
        Ok(Self {
            modality,
            projector_type,
            image_size,
            patch_size,
            n_embd,
            // Informational: blocks take their width from the ffn tensors.
            n_ff: opt(&key("feed_forward_length"))?,
            n_layer,
            n_head,
            eps: file
                .opt_f32(&key("attention.layer_norm_epsilon"))?
                .unwrap_or(1e-6),
            image_mean: rgb(file, "clip.vision.image_mean", [0.5; 3])?,
            image_std: rgb(file, "clip.vision.image_std", [0.5; 3])?,
            projection_dim: req(&key("projection_dim"))?,
            n_merge,
            n_wa_pattern: opt("clip.vision.n_wa_pattern")?,
            window_size: opt("clip.vision.window_size")?,
            deepstack_layers,
            ffn_act,
            n_mel_bins,
            image_longest_edge: if vision {
                opt("clip.vision.preproc_image_size")?
            } else {
                0
            },
            stack_factor: opt("clip.audio.projector.stack_factor")?,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Number of layers flagged as deepstack.
    pub fn n_deepstack(&self) -> usize {
        self.deepstack_layers.iter().filter(|&&d| d).count()
    }
}
