//! What goes into each synthetic file: the metadata keys and the tensor list (names, ggml
//! shapes, types, and how their values are drawn), per family, as llama.cpp's converter
//! names them.

use gguf::{Array, GgmlType, Value, ValueType};

use super::synth_presets::{EncoderKind, EncoderSpec, Preset, TextArch, TextSpec};
use super::synth_vocab::tokenizer_kvs;

/// How a tensor's values are drawn.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fill {
    /// Norm weights: 1 + N(0, 0.02).
    Norm,
    /// Biases: N(0, 0.002).
    Bias,
    /// Matrices and embeddings: N(0, 0.02).
    Weight,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorPlan {
    pub name: String,
    /// ggml order, innermost first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    pub fill: Fill,
}

/// One file to write: its KVs and tensors.
pub struct FilePlan {
    pub kvs: Vec<(String, Value)>,
    pub tensors: Vec<TensorPlan>,
}

/// Storage type of the text model's matrices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightType {
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

impl WeightType {
    fn ggml(self) -> GgmlType {
        match self {
            WeightType::F16 => GgmlType::F16,
            WeightType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// `general.file_type` (llama_ftype): MOSTLY_F16 = 1, MOSTLY_Q8_0 = 7.
    fn file_type(self) -> u32 {
        match self {
            WeightType::F16 => 1,
            WeightType::Q8_0 => 7,
        }
    }
}

struct Tensors {
    list: Vec<TensorPlan>,
    matrix: GgmlType,
}

impl Tensors {
    fn new(matrix: GgmlType) -> Self {
        Tensors {
            list: Vec::new(),
            matrix,
        }
    }

    fn add(&mut self, name: &str, dims: &[usize], ggml_type: GgmlType, fill: Fill) {
        // A quantized type needs whole blocks per row; the converter falls back to F16.
        let ggml_type = if !dims[0].is_multiple_of(ggml_type.block_size()) {
            GgmlType::F16
        } else {
            ggml_type
        };
        self.list.push(TensorPlan {
            name: name.to_owned(),
            dims: dims.iter().map(|&d| d as u64).collect(),
            ggml_type,
            fill,
        });
    }

    fn norm(&mut self, name: &str, n: usize) {
        self.add(name, &[n], GgmlType::F32, Fill::Norm);
    }

    fn bias(&mut self, name: &str, n: usize) {
        self.add(name, &[n], GgmlType::F32, Fill::Bias);
    }

    /// A matrix `y = W x` with `n_in` inputs (ne0) and `n_out` outputs.
    fn mat(&mut self, name: &str, n_in: usize, n_out: usize) {
        let t = self.matrix;
        self.add(name, &[n_in, n_out], t, Fill::Weight);
    }

    /// A linear layer with bias.
    fn linear(&mut self, name: &str, n_in: usize, n_out: usize) {
        self.mat(&format!("{name}.weight"), n_in, n_out);
        self.bias(&format!("{name}.bias"), n_out);
    }

    fn layer_norm(&mut self, name: &str, n: usize) {
        self.norm(&format!("{name}.weight"), n);
        self.bias(&format!("{name}.bias"), n);
    }
}

fn u32v(v: usize) -> Value {
    Value::U32(v as u32)
}

fn f32s(v: &[f32]) -> Value {
    Value::Array(Array {
        elem_type: ValueType::F32,
        items: v.iter().map(|&x| Value::F32(x)).collect(),
    })
}

/// "3.9B", "771M", "117K": the converter's size label.
fn size_label(params: u64) -> String {
    let (v, unit) = match params {
        p if p >= 1_000_000_000 => (p as f64 / 1e9, "B"),
        p if p >= 1_000_000 => (p as f64 / 1e6, "M"),
        p => (p as f64 / 1e3, "K"),
    };
    if v < 10.0 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

fn params(tensors: &[TensorPlan]) -> u64 {
    tensors.iter().map(|t| t.dims.iter().product::<u64>()).sum()
}

fn general(arch: &str, kind: &str, p: &Preset, tensors: &[TensorPlan]) -> Vec<(String, Value)> {
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.type".into(), Value::String(kind.into())),
        (
            "general.name".into(),
            Value::String(format!("synth {}", p.source)),
        ),
        (
            "general.size_label".into(),
            Value::String(size_label(params(tensors))),
        ),
    ]
}

/// The text model: the preset's text tower with `n_layer` layers.
pub fn text_plan(p: &Preset, t: &TextSpec, wtype: WeightType) -> FilePlan {
    let mut ts = Tensors::new(wtype.ggml());
    let (e, q, kv) = (t.n_embd, t.n_head * t.head_dim, t.n_head_kv * t.head_dim);
    if !t.tied {
        ts.mat("output.weight", e, t.n_vocab);
    }
    ts.mat("token_embd.weight", e, t.n_vocab);
    for il in 0..t.n_layer {
        let b = |s: &str| format!("blk.{il}.{s}");
        ts.norm(&b("attn_norm.weight"), e);
        ts.mat(&b("ffn_down.weight"), t.n_ff, e);
        ts.mat(&b("ffn_gate.weight"), e, t.n_ff);
        ts.mat(&b("ffn_up.weight"), e, t.n_ff);
        if t.arch == TextArch::Gemma3 {
            ts.norm(&b("post_attention_norm.weight"), e);
            ts.norm(&b("post_ffw_norm.weight"), e);
        }
        ts.norm(&b("ffn_norm.weight"), e);
        let qk_norm = matches!(t.arch, TextArch::Gemma3 | TextArch::Qwen3Vl);
        let qkv_bias = matches!(t.arch, TextArch::Qwen2Vl | TextArch::Qwen2);
        if qk_norm {
            ts.norm(&b("attn_k_norm.weight"), t.head_dim);
        }
        if qkv_bias {
            ts.bias(&b("attn_k.bias"), kv);
        }
        ts.mat(&b("attn_k.weight"), e, kv);
        ts.mat(&b("attn_output.weight"), q, e);
        if qk_norm {
            ts.norm(&b("attn_q_norm.weight"), t.head_dim);
        }
        if qkv_bias {
            ts.bias(&b("attn_q.bias"), q);
        }
        ts.mat(&b("attn_q.weight"), e, q);
        if qkv_bias {
            ts.bias(&b("attn_v.bias"), kv);
        }
        ts.mat(&b("attn_v.weight"), e, kv);
    }
    ts.norm("output_norm.weight", e);

    let arch = t.arch.gguf_name();
    let mut kvs = general(arch, "model", p, &ts.list);
    let mut a = |k: &str, v: Value| kvs.push((format!("{arch}.{k}"), v));
    a("block_count", u32v(t.n_layer));
    a("context_length", Value::U32(t.n_ctx_train));
    a("embedding_length", u32v(e));
    a("feed_forward_length", u32v(t.n_ff));
    a("attention.head_count", u32v(t.n_head));
    a("attention.head_count_kv", u32v(t.n_head_kv));
    match t.arch {
        TextArch::Gemma3 => {
            a("rope.scaling.type", Value::String("linear".into()));
            a("rope.scaling.factor", Value::F32(t.rope_scale));
            a("rope.freq_base", Value::F32(t.rope_base));
            a("rope.freq_base_swa", Value::F32(t.rope_base_swa));
        }
        TextArch::Qwen2Vl | TextArch::Qwen3Vl => {
            a(
                "rope.dimension_sections",
                Value::Array(Array {
                    elem_type: ValueType::I32,
                    items: t.rope_sections.iter().map(|&s| Value::I32(s)).collect(),
                }),
            );
            a("rope.freq_base", Value::F32(t.rope_base));
        }
        _ => a("rope.freq_base", Value::F32(t.rope_base)),
    }
    a("attention.layer_norm_rms_epsilon", Value::F32(t.rms_eps));
    if matches!(
        t.arch,
        TextArch::Gemma3 | TextArch::Qwen3Vl | TextArch::Llama | TextArch::Mistral3
    ) {
        a("attention.key_length", u32v(t.head_dim));
        a("attention.value_length", u32v(t.head_dim));
    }
    kvs.push(("general.file_type".into(), Value::U32(wtype.file_type())));
    let mut a = |k: &str, v: Value| kvs.push((format!("{arch}.{k}"), v));
    match t.arch {
        TextArch::Gemma3 => a("attention.sliding_window", Value::U32(t.sliding_window)),
        TextArch::Qwen3Vl => a("n_deepstack_layers", u32v(t.n_deepstack)),
        TextArch::Llama | TextArch::Mistral3 => {
            a("vocab_size", u32v(t.n_vocab));
            a("rope.dimension_count", u32v(t.head_dim));
        }
        TextArch::Qwen2Vl | TextArch::Qwen2 => {}
    }
    kvs.push(("general.quantization_version".into(), Value::U32(2)));
    kvs.extend(tokenizer_kvs(t.vocab, t.n_vocab, p.chat_template));
    FilePlan {
        kvs,
        tensors: ts.list,
    }
}

/// One ViT/Whisper block under `prefix` (`v.blk.N` / `a.blk.N`).
fn encoder_block(ts: &mut Tensors, kind: EncoderKind, prefix: &str, w: usize, f: usize) {
    let b = |s: &str| format!("{prefix}.{s}");
    match kind {
        EncoderKind::Pixtral | EncoderKind::Mistral3 => {
            for n in ["attn_k", "attn_out", "attn_q", "attn_v"] {
                ts.mat(&b(&format!("{n}.weight")), w, w);
            }
            ts.norm(&b("ln1.weight"), w);
            ts.mat(&b("ffn_down.weight"), f, w);
            ts.mat(&b("ffn_gate.weight"), w, f);
            ts.mat(&b("ffn_up.weight"), w, f);
            ts.norm(&b("ln2.weight"), w);
        }
        EncoderKind::Qwen25Vl => {
            ts.linear(&b("attn_out"), w, w);
            for n in ["attn_q", "attn_k", "attn_v"] {
                ts.linear(&b(n), w, w);
            }
            ts.linear(&b("ffn_down"), f, w);
            ts.linear(&b("ffn_gate"), w, f);
            ts.linear(&b("ffn_up"), w, f);
            ts.norm(&b("ln1.weight"), w);
            ts.norm(&b("ln2.weight"), w);
        }
        EncoderKind::Qwen3Vl => {
            ts.linear(&b("attn_out"), w, w);
            ts.linear(&b("attn_qkv"), w, 3 * w);
            ts.linear(&b("ffn_up"), w, f);
            ts.linear(&b("ffn_down"), f, w);
            ts.layer_norm(&b("ln1"), w);
            ts.layer_norm(&b("ln2"), w);
        }
        EncoderKind::Qwen2Audio | EncoderKind::Voxtral => {
            ts.linear(&b("ffn_up"), w, f);
            ts.linear(&b("ffn_down"), f, w);
            ts.layer_norm(&b("ln2"), w);
            // Whisper's key projection has no bias.
            ts.mat(&b("attn_k.weight"), w, w);
            for n in ["attn_out", "attn_q", "attn_v"] {
                ts.linear(&b(n), w, w);
            }
            ts.layer_norm(&b("ln1"), w);
        }
        EncoderKind::Gemma3 | EncoderKind::Qwen2Vl | EncoderKind::Idefics3 => {
            ts.layer_norm(&b("ln1"), w);
            ts.layer_norm(&b("ln2"), w);
            ts.linear(&b("ffn_up"), w, f);
            ts.linear(&b("ffn_down"), f, w);
            for n in ["attn_k", "attn_out", "attn_q", "attn_v"] {
                ts.linear(&b(n), w, w);
            }
        }
    }
}

/// The mmproj: the preset's encoder (`enc`, all its layers) projecting to `n_text` wide
/// embeddings. Matrices are F16 (the published mmproj files' type); norms and biases F32.
pub fn mmproj_plan(p: &Preset, enc: &EncoderSpec, n_text: usize) -> FilePlan {
    use EncoderKind as K;
    let mut ts = Tensors::new(GgmlType::F16);
    let (w, f, kind) = (enc.n_embd, enc.n_ff, enc.kind);
    let patch = |ts: &mut Tensors, name: &str, ty: GgmlType| {
        ts.add(name, &[enc.patch, enc.patch, 3, w], ty, Fill::Weight)
    };
    // SigLIP towers (Gemma 3, Idefics3) keep patch and position embeddings in F32, as the
    // converter forces: ggml adds the position table to F32 activations, and has no F32 + F16 add.
    let emb_type = if matches!(kind, K::Gemma3 | K::Idefics3) {
        GgmlType::F32
    } else {
        GgmlType::F16
    };
    match kind {
        K::Gemma3 => {
            ts.add(
                "mm.input_projection.weight",
                &[n_text, w],
                GgmlType::F16,
                Fill::Weight,
            );
            ts.norm("mm.soft_emb_norm.weight", w);
        }
        K::Pixtral | K::Mistral3 => {
            ts.add(
                "v.token_embd.img_break",
                &[n_text],
                GgmlType::F32,
                Fill::Weight,
            );
            if kind == K::Pixtral {
                ts.linear("mm.1", w, n_text);
                ts.linear("mm.2", n_text, n_text);
            } else {
                ts.mat("mm.1.weight", w, n_text);
                ts.mat("mm.2.weight", n_text, n_text);
                ts.norm("mm.input_norm.weight", w);
                let m = enc.merge * enc.merge * w;
                ts.add(
                    "mm.patch_merger.weight",
                    &[m, w],
                    GgmlType::F16,
                    Fill::Weight,
                );
            }
            ts.norm("v.pre_ln.weight", w);
        }
        K::Idefics3 => {
            ts.mat("mm.model.fc.weight", w * enc.merge * enc.merge, n_text);
        }
        K::Qwen2Audio | K::Voxtral => {
            let conv = |ts: &mut Tensors, i: usize, n_in: usize| {
                ts.add(
                    &format!("a.conv1d.{i}.bias"),
                    &[1, w],
                    GgmlType::F32,
                    Fill::Bias,
                );
                ts.add(
                    &format!("a.conv1d.{i}.weight"),
                    &[3, n_in, w],
                    GgmlType::F16,
                    Fill::Weight,
                );
            };
            conv(&mut ts, 1, enc.n_mel);
            conv(&mut ts, 2, w);
            ts.add(
                "a.position_embd.weight",
                &[w, enc.n_pos],
                GgmlType::F32,
                Fill::Weight,
            );
            ts.layer_norm("a.post_ln", w);
            if kind == K::Qwen2Audio {
                ts.linear("mm.a.fc", w, n_text);
            } else {
                ts.mat("mm.a.mlp.1.weight", w * enc.stack_factor, n_text);
                ts.mat("mm.a.mlp.2.weight", n_text, n_text);
            }
        }
        K::Qwen2Vl | K::Qwen25Vl | K::Qwen3Vl => {}
    }
    let block_prefix = if kind.is_audio() { "a.blk" } else { "v.blk" };
    for il in 0..enc.n_layer {
        encoder_block(&mut ts, kind, &format!("{block_prefix}.{il}"), w, f);
    }
    match kind {
        K::Qwen2Vl | K::Qwen25Vl | K::Qwen3Vl => {
            let m = w * enc.merge * enc.merge;
            if kind == K::Qwen3Vl {
                for &il in &enc.deepstack {
                    let d = |s: &str| format!("v.deepstack.{il}.{s}");
                    ts.linear(&d("fc1"), m, m);
                    ts.linear(&d("fc2"), m, n_text);
                    ts.layer_norm(&d("norm"), m);
                }
            }
            ts.linear("mm.0", m, m);
            ts.linear("mm.2", m, n_text);
            if kind == K::Qwen25Vl {
                ts.norm("v.post_ln.weight", w);
            } else {
                ts.layer_norm("v.post_ln", w);
            }
            if kind == K::Qwen3Vl {
                ts.bias("v.patch_embd.bias", w);
            }
            patch(&mut ts, "v.patch_embd.weight", GgmlType::F16);
            patch(&mut ts, "v.patch_embd.weight.1", GgmlType::F16);
            if kind == K::Qwen3Vl {
                // F32: ggml interpolates the table to the image's grid, in F32 only.
                ts.add(
                    "v.position_embd.weight",
                    &[w, enc.n_pos],
                    GgmlType::F32,
                    Fill::Weight,
                );
            }
        }
        K::Gemma3 | K::Idefics3 => {
            ts.bias("v.patch_embd.bias", w);
            patch(&mut ts, "v.patch_embd.weight", emb_type);
            ts.add(
                "v.position_embd.weight",
                &[w, enc.n_pos],
                emb_type,
                Fill::Weight,
            );
            ts.layer_norm("v.post_ln", w);
        }
        K::Pixtral | K::Mistral3 => patch(&mut ts, "v.patch_embd.weight", GgmlType::F16),
        K::Qwen2Audio | K::Voxtral => {}
    }

    let mut kvs = general("clip", "mmproj", p, &ts.list);
    kvs.push(("general.file_type".into(), Value::U32(1)));
    let mut a = |k: &str, v: Value| kvs.push((k.to_owned(), v));
    if kind.is_audio() {
        a("clip.has_audio_encoder", Value::Bool(true));
        a("clip.audio.projection_dim", u32v(n_text));
        a("clip.audio.embedding_length", u32v(w));
        a("clip.audio.feed_forward_length", u32v(f));
        a("clip.audio.block_count", u32v(enc.n_layer));
        a("clip.audio.attention.head_count", u32v(enc.n_head));
        a(
            "clip.projector_type",
            Value::String(kind.projector_type().into()),
        );
        a("clip.audio.num_mel_bins", u32v(enc.n_mel));
        a(
            "clip.audio.attention.layer_norm_epsilon",
            Value::F32(enc.eps),
        );
        if kind == K::Voxtral {
            a("clip.audio.projector.stack_factor", u32v(enc.stack_factor));
        }
    } else {
        a("clip.has_vision_encoder", Value::Bool(true));
        a("clip.vision.projection_dim", u32v(n_text));
        a("clip.vision.image_size", u32v(enc.image_size));
        a("clip.vision.patch_size", u32v(enc.patch));
        a("clip.vision.embedding_length", u32v(w));
        a("clip.vision.feed_forward_length", u32v(f));
        a("clip.vision.block_count", u32v(enc.n_layer));
        a("clip.vision.attention.head_count", u32v(enc.n_head));
        a("clip.vision.image_mean", f32s(&enc.mean));
        a("clip.vision.image_std", f32s(&enc.std));
        a(
            "clip.projector_type",
            Value::String(kind.projector_type().into()),
        );
        if kind == K::Qwen25Vl {
            a("clip.use_silu", Value::Bool(true));
            a("clip.vision.n_wa_pattern", u32v(enc.n_wa_pattern));
        }
        a(
            "clip.vision.attention.layer_norm_epsilon",
            Value::F32(enc.eps),
        );
        match kind {
            // The converter writes Gemma 3's pooling factor only when it is not the default 4.
            K::Gemma3 => {
                a("clip.use_gelu", Value::Bool(true));
                if enc.merge != 4 {
                    a("clip.vision.projector.scale_factor", u32v(enc.merge));
                }
            }
            K::Qwen3Vl => {
                a("clip.use_gelu", Value::Bool(true));
                a("clip.vision.spatial_merge_size", u32v(enc.merge));
                let flags = (0..enc.n_layer)
                    .map(|il| Value::Bool(enc.deepstack.contains(&il)))
                    .collect();
                a(
                    "clip.vision.is_deepstack_layers",
                    Value::Array(Array {
                        elem_type: ValueType::Bool,
                        items: flags,
                    }),
                );
            }
            K::Idefics3 => {
                a("clip.vision.projector.scale_factor", u32v(enc.merge));
                a("clip.use_gelu", Value::Bool(true));
                a(
                    "clip.vision.preproc_image_size",
                    u32v(enc.preproc_image_size),
                );
            }
            K::Pixtral => a("clip.use_silu", Value::Bool(true)),
            K::Mistral3 => {
                a("clip.use_silu", Value::Bool(true));
                a("clip.vision.spatial_merge_size", u32v(enc.merge));
            }
            _ => {}
        }
    }
    kvs.push(("general.quantization_version".into(), Value::U32(2)));
    FilePlan {
        kvs,
        tensors: ts.list,
    }
}
