//! `mtmd synth`: writes a text-model GGUF and an mmproj GGUF with seeded random weights but
//! a real model's dimensions, keys and tensor names, for speed comparisons without the real
//! weights. Files are streamed: header first, then each tensor generated chunk by chunk.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Parser;
use gguf::{GgmlType, GgufStreamWriter, TensorSink};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use super::synth_layout::{FilePlan, Fill, TensorPlan, WeightType, mmproj_plan, text_plan};
use super::synth_presets::{NAMES, Preset, preset};

#[derive(Parser)]
pub struct Args {
    /// Which model to imitate (gemma3-4b, qwen2-vl-2b, qwen2.5-vl-3b, qwen3-vl-2b,
    /// pixtral-12b, mistral-small-3.1, smolvlm-256m, qwen2-audio-7b, voxtral-mini-3b).
    #[arg(long)]
    pub preset: String,
    /// Output directory (created if missing): NAME.gguf and mmproj-NAME.gguf.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the weights: the same seed writes the same bytes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Storage type of the text model's matrices (the mmproj is always F16).
    #[arg(long = "type", value_enum, default_value = "f16")]
    pub wtype: WeightType,
    /// Write the text model's real layer count (default: 2 layers, real widths).
    #[arg(long)]
    pub full_depth: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("unknown preset '{name}'; valid presets: {}", NAMES.join(", "))]
    UnknownPreset { name: String },
    #[error("cannot create output directory {}: {err}", path.display())]
    OutDir { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Write(#[from] gguf::GgufWriteError),
}

/// Layers of the text tower without `--full-depth` (Qwen3-VL: one more than its deepstack
/// slices).
pub const SHORT_TEXT_LAYERS: usize = 2;

/// The preset as it will be written: the text tower shortened unless `full_depth`.
pub fn resolve(name: &str, full_depth: bool) -> Result<Preset, SynthError> {
    let mut p = preset(name).ok_or_else(|| SynthError::UnknownPreset {
        name: name.to_owned(),
    })?;
    if !full_depth {
        // Deepstack slices are added to the first layers, and a model needs more layers
        // than slices.
        let short = SHORT_TEXT_LAYERS.max(p.text.n_deepstack + 1);
        p.text.n_layer = p.text.n_layer.min(short);
    }
    Ok(p)
}

/// The two paths written for `preset` under `dir`.
pub fn out_paths(dir: &Path, preset: &Preset) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{}.gguf", preset.name)),
        dir.join(format!("mmproj-{}.gguf", preset.name)),
    )
}

pub fn run(args: Args) -> Result<()> {
    let p = resolve(&args.preset, args.full_depth)?;
    let (text, mmproj) = write_preset(&p, &args.out, args.seed, args.wtype, true)?;
    println!("{}", text.display());
    println!("{}", mmproj.display());
    Ok(())
}

/// Writes both files of `p` into `dir`; returns their paths.
pub fn write_preset(
    p: &Preset,
    dir: &Path,
    seed: u64,
    wtype: WeightType,
    progress: bool,
) -> Result<(PathBuf, PathBuf), SynthError> {
    std::fs::create_dir_all(dir).map_err(|err| SynthError::OutDir {
        path: dir.to_owned(),
        err,
    })?;
    let (text_path, mmproj_path) = out_paths(dir, p);
    let text = text_plan(p, &p.text, wtype);
    write_plan(&text, &text_path, seed, progress)?;
    let mmproj = mmproj_plan(p, &p.encoder, p.text.n_embd);
    // A different stream than the text model's, so the two files never share weights.
    write_plan(&mmproj, &mmproj_path, seed ^ 0x6d6d_7072_6f6a, progress)?;
    Ok((text_path, mmproj_path))
}

fn write_plan(plan: &FilePlan, path: &Path, seed: u64, progress: bool) -> Result<(), SynthError> {
    let mut w = GgufStreamWriter::new();
    for (k, v) in &plan.kvs {
        w.add_kv(k, v.clone());
    }
    for t in &plan.tensors {
        w.add_tensor(&t.name, t.ggml_type, &t.dims)?;
    }
    let bar = (progress && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::with_draw_target(Some(w.data_bytes()), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        bar.set_message(name.into_owned());
        bar
    });
    w.write_file(path, |i, _, sink| {
        produce(&plan.tensors[i], seed, sink, &|n| {
            if let Some(bar) = &bar {
                bar.inc(n)
            }
        })
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Elements per independently seeded chunk (a multiple of every block size used).
const CHUNK: u64 = 1 << 18;
/// Chunks generated in parallel before they are written in order.
const BATCH: u64 = 16;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A tensor's stream depends on the seed and its name only, not on its place in the file.
fn tensor_seed(seed: u64, name: &str) -> u64 {
    let fnv = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    splitmix(seed ^ fnv)
}

/// Standard normal-ish values: the sum of four 16-bit uniforms (Irwin–Hall), cheap and
/// bounded (|z| < 3.5), which is all random weights need.
fn normals(state: u64, out: &mut [f32]) {
    const MEAN: f32 = 2.0 * 65535.0;
    // sqrt(4 * (65536^2 - 1) / 12)
    const STD: f32 = 37_837.23;
    let mut s = state;
    for v in out.iter_mut() {
        s = splitmix(s);
        let sum = (s & 0xffff) + ((s >> 16) & 0xffff) + ((s >> 32) & 0xffff) + (s >> 48);
        *v = (sum as f32 - MEAN) / STD;
    }
}

fn fill_values(fill: Fill, v: &mut [f32]) {
    let (offset, scale) = match fill {
        Fill::Norm => (1.0, 0.02),
        Fill::Bias => (0.0, 0.002),
        Fill::Weight => (0.0, 0.02),
    };
    for x in v {
        *x = offset + scale * *x;
    }
}

fn encode(ty: GgmlType, v: &[f32], out: &mut Vec<u8>) {
    match ty {
        GgmlType::F32 => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        GgmlType::F16 => v
            .iter()
            .for_each(|x| out.extend_from_slice(&half::f16::from_f32(*x).to_bits().to_le_bytes())),
        // ggml's Q8_0 block: f16 scale max|x|/127, then 32 rounded int8 values.
        _ => {
            for block in v.chunks(32) {
                let amax = block.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let d = amax / 127.0;
                let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                out.extend(block.iter().map(|x| (x * inv).round() as i8 as u8));
            }
        }
    }
}

fn chunk_bytes(t: &TensorPlan, seed: u64, chunk: u64, n_elems: u64) -> Vec<u8> {
    let start = chunk * CHUNK;
    let n = CHUNK.min(n_elems - start) as usize;
    let mut v = vec![0f32; n];
    normals(splitmix(seed.wrapping_add(chunk)), &mut v);
    fill_values(t.fill, &mut v);
    let mut out = Vec::with_capacity(n * 4);
    encode(t.ggml_type, &v, &mut out);
    out
}

fn produce(
    t: &TensorPlan,
    seed: u64,
    sink: &mut TensorSink<'_>,
    progress: &(dyn Fn(u64) + Sync),
) -> std::io::Result<()> {
    if !matches!(t.ggml_type, GgmlType::F32 | GgmlType::F16 | GgmlType::Q8_0) {
        return Err(std::io::Error::other(format!(
            "no generator for type {}",
            t.ggml_type
        )));
    }
    let seed = tensor_seed(seed, &t.name);
    let n_elems: u64 = t.dims.iter().product();
    let n_chunks = n_elems.div_ceil(CHUNK);
    let mut first = 0;
    while first < n_chunks {
        let last = (first + BATCH).min(n_chunks);
        let chunks: Vec<Vec<u8>> = (first..last)
            .into_par_iter()
            .map(|c| chunk_bytes(t, seed, c, n_elems))
            .collect();
        for c in chunks {
            sink.write(&c)?;
            progress(c.len() as u64);
        }
        first = last;
    }
    Ok(())
}

/// Test-size variant: one text layer (more for deepstack), two encoder layers (three for deepstack), a small
/// vocabulary, and widths halved (heads too, head size kept) until a layer has at most
/// ~4M parameters. Real widths survive where they are that small.
#[cfg(test)]
pub fn shrink_for_tests(mut p: Preset) -> Preset {
    const BUDGET: usize = 4 << 20;
    let t = &mut p.text;
    t.n_layer = t.n_deepstack + 1;
    t.n_vocab = match t.vocab {
        super::synth_presets::VocabKind::Tekken { .. } => 2600,
        _ => 2048,
    };
    // Qwen-style files carry no key_length: n_embd must stay n_head * head_dim.
    let text_params = |t: &super::synth_presets::TextSpec| {
        let (q, kv) = (t.n_head * t.head_dim, t.n_head_kv * t.head_dim);
        t.n_embd * (2 * q + 2 * kv) + 3 * t.n_embd * t.n_ff
    };
    while text_params(t) > BUDGET && t.n_head.is_multiple_of(2) && t.n_embd.is_multiple_of(64) {
        t.n_embd /= 2;
        t.n_ff /= 2;
        t.n_head /= 2;
        t.n_head_kv = (t.n_head_kv / 2).max(1);
        if !t.n_head.is_multiple_of(t.n_head_kv) {
            t.n_head_kv = 1;
        }
    }
    if t.arch == super::synth_presets::TextArch::Gemma3 {
        t.sliding_window = t.sliding_window.min(512);
    }
    let e = &mut p.encoder;
    e.n_layer = if e.deepstack.is_empty() { 2 } else { 3 };
    if !e.deepstack.is_empty() {
        e.deepstack = vec![0, 1, 2];
    }
    while e.n_embd * (4 * e.n_embd + 2 * e.n_ff) > BUDGET && e.n_head.is_multiple_of(2) {
        e.n_embd /= 2;
        e.n_ff /= 2;
        e.n_head /= 2;
    }
    p
}

#[cfg(test)]
#[path = "synth_tests.rs"]
mod tests;
