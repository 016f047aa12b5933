//! `mtmd bench`: llama-bench-style throughput of prompt processing (ppN) and token
//! generation (tgN), median over repetitions; with `--mmproj` and `--image` (or `--audio`),
//! also the encode time of the image (or of one 30 s audio window) and the prefill speed of its
//! embeddings in the text model. Under the table: this machine's peaks (measured by
//! `tensor::cpu::probe` in the same run), pp and the encode as a fraction of the f32 FMA peak,
//! tg as a fraction of the memory-bandwidth bound.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use llm::{KvType, Logits, Model};

use super::common::load_model;
use super::model_args::ModelArgs;
use super::runtime_args::ComputeArgs;

#[derive(ClapArgs)]
#[command(mut_arg("threads", |a| a.default_value("2").help("Compute threads")))]
#[command(mut_arg("kv_type", |a| a.help("KV cache type")))]
#[command(mut_arg("mmproj", |a| a
    .help("Projector GGUF, for the image row (with --image) or the audio row (with --audio)")))]
pub struct Args {
    /// --mmproj is for the image or audio row.
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt tokens processed in one batch (0: skip).
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (0: skip).
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    #[command(flatten)]
    compute: ComputeArgs,
    /// Repetitions per test.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Print a JSON array instead of the table.
    #[arg(long)]
    json: bool,
    /// Image to encode and prefill for the image row (with --mmproj).
    /// (With -hf the repository's mmproj is used when --mmproj is not given.)
    #[arg(long, conflicts_with = "audio")]
    image: Option<PathBuf>,
    /// Audio file whose first 30 s window is encoded and prefilled for the audio row.
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Continuous batching instead: for each batch size, that many sequences prefill -p
    /// tokens and generate -n tokens together (aggregate and per-sequence t/s).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    parallel: Vec<usize>,
}

/// The media row: encoder time and how fast the embeddings go through the text model.
struct ImageRow {
    kind: mtmd::MediaKind,
    /// Media chunks of the item: an image's tiles, a clip's 30 s windows.
    n_chunks: usize,
    n_tokens: usize,
    encode_ms: f64,
    encode_spread: f64,
    prefill_tokens_per_s: f64,
    prefill_spread: f64,
    /// The encoder's estimate of one encode's floating-point operations.
    flops: Option<u64>,
    /// On a GPU: dispatches, submits and buffers read back by one encode.
    gpu_work: Option<[u64; 3]>,
}

impl ImageRow {
    fn gflops_per_s(&self) -> Option<f64> {
        self.flops.map(|f| f as f64 / (self.encode_ms * 1e6))
    }
}

/// Encodes every media chunk of `item` (an image's tiles, a clip's 30 s windows) and prefills
/// their embeddings into a fresh session, `repetitions` times.
fn time_media(
    model: Arc<Model>,
    args: &Args,
    mmproj: &std::path::Path,
    item: &mtmd::MediaItem,
) -> Result<ImageRow> {
    let device = args.compute.encoder_device()?;
    let params = mtmd::ContextParams {
        device: device.clone(),
        ..mtmd::ContextParams::default()
    };
    let mut ctx = mtmd::Context::new(mmproj, model, params)?;
    let marker = ctx.media_marker().to_string();
    let chunks = ctx.tokenize(&marker, &[item])?;
    let media: Vec<_> = chunks
        .iter()
        .filter_map(|c| c.as_media().cloned())
        .collect();
    if media.is_empty() {
        bail!("{}: no media chunk came out of tokenizing", item.id());
    }
    let n_tokens: usize = media.iter().map(|c| c.n_tokens()).sum();
    let model = ctx.model().clone();
    // All chunks in one batched encode (as `run` and the server do). Warm-up with the layer
    // progress bar on a terminal; the timed runs go without.
    let refs: Vec<&mtmd::MediaChunk> = media.iter().collect();
    ctx.set_encode_progress(super::media::encode_progress());
    let embds = ctx.encode_batch(&refs)?;
    ctx.set_encode_progress(None);
    let mut encode_ms = Vec::with_capacity(args.repetitions);
    let mut prefill = Vec::with_capacity(args.repetitions);
    let mut gpu_work = None;
    for _ in 0..args.repetitions {
        let before = gpu_counts(&device);
        let t0 = Instant::now();
        drop(ctx.encode_batch(&refs)?);
        encode_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (before, gpu_counts(&device)) {
            gpu_work = Some([b[0] - a[0], b[1] - a[1], b[2] - a[2]]);
        }
        let mut session = model.new_session(n_tokens + 1, args.compute.kv_type)?;
        let t0 = Instant::now();
        for (chunk, embd) in media.iter().zip(&embds) {
            mtmd::eval_media(&model, &mut session, chunk, embd)?;
        }
        prefill.push(n_tokens as f64 / t0.elapsed().as_secs_f64());
    }
    let (encode_ms, encode_spread) = stats(&encode_ms);
    let (prefill_tokens_per_s, prefill_spread) = stats(&prefill);
    let flops: Option<Vec<u64>> = media.iter().map(|c| ctx.encode_flops(c)).collect();
    Ok(ImageRow {
        kind: item.kind(),
        n_chunks: media.len(),
        n_tokens,
        encode_ms,
        encode_spread,
        prefill_tokens_per_s,
        prefill_spread,
        flops: flops.map(|f| f.iter().sum()),
        gpu_work,
    })
}

/// Dispatches, submits and read-backs so far on `device`, when it is a GPU.
fn gpu_counts(device: &llm::Device) -> Option<[u64; 3]> {
    match device {
        #[cfg(feature = "gpu")]
        llm::Device::Gpu(ctx) => {
            let (d, s) = ctx.work_counts();
            Some([d, s, ctx.downloads()])
        }
        _ => None,
    }
}

struct Row {
    test: String,
    tokens_per_s: f64,
    spread: f64,
    /// tg: t/s of each repetition, and the read bandwidth (GB/s) probed before the first
    /// and after each one (empty for pp).
    samples: Vec<f64>,
    bandwidth: Vec<f64>,
}

impl Row {
    /// tg: per repetition, its t/s over the bound at the bandwidth probed on either side of
    /// it (the host's bandwidth drifts by tens of percent within minutes, so a probe taken
    /// once, before or after, can pair a slow stretch with a fast one). The median fraction
    /// and the median bandwidth; without probes, the median t/s against `fallback_gbps`.
    fn bound_fraction(&self, bytes_per_token: f64, fallback_gbps: f64) -> (f64, f64) {
        if !self.probed() {
            return (
                self.tokens_per_s * bytes_per_token / (fallback_gbps * 1e9),
                fallback_gbps,
            );
        }
        let beside: Vec<f64> = self
            .bandwidth
            .windows(2)
            .map(|w| (w[0] + w[1]) / 2.0)
            .collect();
        let fractions: Vec<f64> = self
            .samples
            .iter()
            .zip(&beside)
            .map(|(tps, gbps)| tps * bytes_per_token / (gbps * 1e9))
            .collect();
        (stats(&fractions).0, stats(&beside).0)
    }

    /// Whether every repetition has a probe on either side.
    fn probed(&self) -> bool {
        !self.samples.is_empty() && self.bandwidth.len() == self.samples.len() + 1
    }
}

/// Median and standard deviation.
fn stats(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    let mean = s.iter().sum::<f64>() / s.len() as f64;
    let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / s.len() as f64;
    (median, var.sqrt())
}

/// Deterministic, non-special token ids (the text does not matter for speed).
fn bench_tokens(model: &Model, n: usize) -> Vec<u32> {
    let n_vocab = model.decoder.n_vocab() as u64;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (1000 + state % (n_vocab.saturating_sub(1000).max(1))).min(n_vocab - 1) as u32
        })
        .collect()
}

fn time_pp(model: &Model, n: usize, kv: KvType) -> Result<f64> {
    let tokens = bench_tokens(model, n);
    let mut session = model.new_session(n + 1, kv)?;
    let t0 = Instant::now();
    session.decode_tokens(model, &tokens, Logits::Last)?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn time_tg(model: &Model, n: usize, kv: KvType) -> Result<f64> {
    let tokens = bench_tokens(model, n);
    let mut session = model.new_session(n + 1, kv)?;
    let t0 = Instant::now();
    for t in &tokens {
        session.decode_tokens(model, std::slice::from_ref(t), Logits::Last)?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

/// What the text model's weights and K/V cost per token, for the roofline figures.
struct TextCost {
    /// FLOP per prompt token in the layers' matmuls and attention (average context n/2).
    pp_flops_per_token: f64,
    /// Bytes read per decoded token: layer weights + output head + K/V at the average
    /// context of the tg run.
    tg_weight_bytes: f64,
    tg_kv_bytes: f64,
}

impl TextCost {
    fn new(model: &Model, n_prompt: usize, n_gen: usize, kv: KvType) -> Self {
        let hp = model.hparams();
        let tensors = model.file.tensors();
        let layer = |t: &&gguf::TensorInfo| t.name.starts_with("blk.");
        let layer_elems: u64 = tensors
            .iter()
            .filter(layer)
            .filter(|t| t.dims.len() >= 2)
            .map(|t| t.n_elements())
            .sum();
        let layer_bytes: u64 = tensors.iter().filter(layer).map(|t| t.n_bytes).sum();
        // The head: `output.weight`, or the token embeddings when they are tied.
        let head = model
            .file
            .tensor("output.weight")
            .or_else(|| model.file.tensor("token_embd.weight"))
            .map_or(0, |t| t.n_bytes);
        let q_dim = (hp.n_head * hp.head_dim) as f64;
        let n_layer = hp.n_layer as f64;
        Self {
            pp_flops_per_token: 2.0 * layer_elems as f64
                + 4.0 * (n_prompt as f64 / 2.0) * q_dim * n_layer,
            tg_weight_bytes: (layer_bytes + head) as f64,
            tg_kv_bytes: 2.0 * (hp.kv_dim() * kv.bytes()) as f64 * n_layer * (n_gen as f64 / 2.0),
        }
    }
}

/// "1.23 GFLOP" or, below one, "45.6 MFLOP".
fn flop_text(flop: f64) -> String {
    if flop >= 1e9 {
        format!("{:.2} GFLOP", flop / 1e9)
    } else {
        format!("{:.1} MFLOP", flop / 1e6)
    }
}

/// The machine-peak lines under the table: pp and the media encode against the FMA peak, tg
/// against the memory-bandwidth bound (bytes per token ÷ read bandwidth).
fn peak_lines(
    rows: &[Row],
    image: Option<&ImageRow>,
    cost: &TextCost,
    peaks: &tensor::cpu::probe::MachinePeaks,
) -> Vec<String> {
    let mut lines = vec![peaks.to_string()];
    for r in rows {
        if r.test.starts_with("pp") {
            let gflops = r.tokens_per_s * cost.pp_flops_per_token / 1e9;
            lines.push(format!(
                "{}: {} per token, {gflops:.1} GFLOP/s = {:.0}% of the f32 FMA peak",
                r.test,
                flop_text(cost.pp_flops_per_token),
                100.0 * gflops / peaks.fma_gflops
            ));
        } else if r.test.starts_with("tg") {
            let bytes = cost.tg_weight_bytes + cost.tg_kv_bytes;
            let (fraction, gbps) = r.bound_fraction(bytes, peaks.read_gbps);
            let when = if r.probed() {
                " (median of the repetitions, each against the bandwidth probed on either side of it)"
            } else {
                ""
            };
            let bound = gbps * 1e9 / bytes;
            lines.push(format!(
                "{}: {:.1} MB read per token ({:.1} MB weights + {:.2} MB K/V), bound {bound:.1} t/s \
                 at {gbps:.1} GB/s: {:.0}% of the bandwidth bound{when}{}",
                r.test,
                bytes / 1e6,
                cost.tg_weight_bytes / 1e6,
                cost.tg_kv_bytes / 1e6,
                100.0 * fraction,
                if fraction > 1.0 { " (the weights fit in the caches)" } else { "" }
            ));
        }
    }
    if let Some(img) = image
        && let (Some(flops), Some(gflops)) = (img.flops, img.gflops_per_s())
    {
        // The peak of the arithmetic the encoder's matmuls use.
        let (peak, what) = match (tensor::cpu::encoder_precision(), peaks.bf16_gflops) {
            (tensor::cpu::EncoderPrecision::Bf16, Some(bf16)) => (bf16, "bf16 dot-product"),
            _ => (peaks.fma_gflops, "f32 FMA"),
        };
        lines.push(format!(
            "{} encode: {}, {gflops:.1} GFLOP/s = {:.0}% of the {what} peak",
            img.kind.name(),
            flop_text(flops as f64),
            100.0 * gflops / peak
        ));
    }
    lines
}

pub fn run(args: Args) -> Result<()> {
    if args.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    args.compute.apply()?;
    let threads = args.compute.threads.expect("-t has a default");
    let media_path = args.image.as_ref().or(args.audio.as_ref());
    // The repository's mmproj is only worth downloading for the media row.
    let resolved = args.model.resolve(media_path.is_some())?;
    if media_path.is_some() && resolved.mmproj.is_none() {
        bail!("--image and --audio need --mmproj (or an -hf repository with an mmproj)");
    }
    if media_path.is_none() && args.model.mmproj.is_some() {
        bail!("--mmproj is for the image or audio row: give --image or --audio");
    }
    let item = match (&args.image, &args.audio) {
        (Some(path), _) => Some(super::media::load_image(path)?),
        (None, Some(path)) => Some(super::media::load_audio(path, 600.0)?),
        (None, None) => None,
    };
    let model = Arc::new(load_model(&resolved.model, &args.compute)?);
    if !args.parallel.is_empty() {
        let kv = args.compute.kv_type;
        let (p, n) = (args.n_prompt, args.n_gen);
        return super::bench_parallel::run(&model, &args.parallel, p, n, kv, args.json);
    }
    // Warm-up: touch every weight page and JIT nothing; not timed.
    time_pp(&model, 8.min(args.n_prompt.max(1)), args.compute.kv_type)?;

    let mut rows = Vec::new();
    // `probe`: also probe the read bandwidth before the first repetition and after each.
    let mut measure = |test: String, probe: bool, f: &dyn Fn() -> Result<f64>| -> Result<()> {
        let read_gbps = || tensor::cpu::probe::read_bandwidth_gbps(threads);
        let mut bandwidth: Vec<f64> = probe.then(read_gbps).into_iter().collect();
        let mut samples = Vec::with_capacity(args.repetitions);
        for _ in 0..args.repetitions {
            samples.push(f()?);
            if probe {
                bandwidth.push(read_gbps());
            }
        }
        let (median, spread) = stats(&samples);
        rows.push(Row {
            test,
            tokens_per_s: median,
            spread,
            samples,
            bandwidth,
        });
        Ok(())
    };
    if args.n_prompt > 0 {
        measure(format!("pp{}", args.n_prompt), false, &|| {
            time_pp(&model, args.n_prompt, args.compute.kv_type)
        })?;
    }
    if args.n_gen > 0 {
        measure(format!("tg{}", args.n_gen), true, &|| {
            time_tg(&model, args.n_gen, args.compute.kv_type)
        })?;
    }
    let gpu = gpu_figures(&model, &args)?;
    let backend = if gpu.is_some() { "GPU" } else { "CPU" };
    let image_row = match (&resolved.mmproj, &item) {
        (Some(mmproj), Some(item)) => Some(time_media(model.clone(), &args, mmproj, item)?),
        _ => None,
    };
    // Measured in the same run, after the timed tests, so they do not heat or crowd them.
    let peaks = tensor::cpu::probe::MachinePeaks::measure(threads);
    let cost = TextCost::new(&model, args.n_prompt, args.n_gen, args.compute.kv_type);

    if args.json {
        let mut arr: Vec<_> = rows
            .iter()
            .map(|r| {
                let mut row = serde_json::json!({
                    "test": r.test,
                    "threads": threads,
                    "backend": backend,
                    "device": model.device_summary(),
                    "tokens_per_s": r.tokens_per_s,
                    "spread": r.spread,
                });
                if r.test.starts_with("pp") {
                    let gflops = r.tokens_per_s * cost.pp_flops_per_token / 1e9;
                    row["gflops_per_s"] = gflops.into();
                    row["fma_peak_fraction"] = (gflops / peaks.fma_gflops).into();
                } else if r.test.starts_with("tg") {
                    let bytes = cost.tg_weight_bytes + cost.tg_kv_bytes;
                    row["bytes_per_token"] = bytes.into();
                    let (fraction, gbps) = r.bound_fraction(bytes, peaks.read_gbps);
                    row["bandwidth_bound_fraction"] = fraction.into();
                    row["read_gbps_beside"] = gbps.into();
                    row["read_gbps_probes"] = r.bandwidth.clone().into();
                }
                row
            })
            .collect();
        if let Some(img) = &image_row {
            arr.push(serde_json::json!({
                "test": img.kind.name(),
                "threads": threads,
                "n_tokens": img.n_tokens,
                "encode_ms": img.encode_ms,
                "prefill_tokens_per_s": img.prefill_tokens_per_s,
                "encode_flops": img.flops,
                "encode_gflops_per_s": img.gflops_per_s(),
                "encode_fma_peak_fraction": img.gflops_per_s().map(|g| g / peaks.fma_gflops),
                "encode_gpu_dispatches_submits_readbacks": img.gpu_work,
            }));
        }
        arr.push(serde_json::json!({
            "test": "machine_peak",
            "threads": peaks.threads,
            "fma_gflops": peaks.fma_gflops,
            "bf16_gflops": peaks.bf16_gflops,
            "read_gbps": peaks.read_gbps,
        }));
        println!("{}", serde_json::to_string_pretty(&arr)?);
        return Ok(());
    }
    let name = model
        .file
        .get("general.name")
        .and_then(|v| v.as_str())
        .unwrap_or(&model.hparams().arch_name)
        .to_string();
    let size = format!("{:.2} MiB", model.size_bytes() as f64 / (1024.0 * 1024.0));
    let params = format!("{:.2} M", model.n_params() as f64 / 1e6);
    println!(
        "| {:<32} | {:>12} | {:>10} | {:>7} | {:>7} | {:>8} | {:>20} |",
        "model", "size", "params", "backend", "threads", "test", "t/s"
    );
    println!(
        "|{:-<34}|{:->14}|{:->12}|{:->9}|{:->9}|{:->10}|{:->22}|",
        "", "", "", "", "", "", ""
    );
    for r in &rows {
        println!(
            "| {:<32} | {:>12} | {:>10} | {:>7} | {:>7} | {:>8} | {:>20} |",
            name,
            size,
            params,
            backend,
            threads,
            r.test,
            format!("{:.2} ± {:.2}", r.tokens_per_s, r.spread)
        );
    }
    println!("\ndevice: {}", model.device_summary());
    if let Some(g) = &gpu {
        println!("{g}");
    }
    if let Some(img) = &image_row {
        println!(
            "| {:<32} | {:>12} | {:>10} | {:>7} | {:>7} | {:>8} | {:>20} |",
            name,
            size,
            params,
            backend,
            threads,
            match img.kind {
                mtmd::MediaKind::Image => format!("img{}", img.n_tokens),
                mtmd::MediaKind::Audio => format!("aud{}", img.n_tokens),
            },
            format!(
                "{:.2} ± {:.2}",
                img.prefill_tokens_per_s, img.prefill_spread
            )
        );
        let what = match (img.kind, img.n_chunks) {
            (mtmd::MediaKind::Image, 1) => "image".to_string(),
            (mtmd::MediaKind::Image, n) => format!("image ({n} tiles)"),
            (mtmd::MediaKind::Audio, 1) => "audio (one 30 s window)".to_string(),
            (mtmd::MediaKind::Audio, n) => format!("audio ({n} windows of 30 s)"),
        };
        println!(
            "\n{what}: encode {:.2} ± {:.2} ms (median of {}), prefill of {} tokens {:.2} t/s",
            img.encode_ms,
            img.encode_spread,
            args.repetitions,
            img.n_tokens,
            img.prefill_tokens_per_s
        );
        if let Some([dispatches, submits, reads]) = img.gpu_work {
            let gflop = img.flops.map_or(0.0, |f| f as f64 / 1e9);
            println!(
                "gpu per encode: {dispatches} dispatches in {submits} submits, {reads} buffers read \
                 back, {gflop:.1} GFLOP (compute bound: GFLOP / your GPU's f32 TFLOP/s = ms)"
            );
        }
    }
    println!();
    for line in peak_lines(&rows, image_row.as_ref(), &cost, &peaks) {
        println!("{line}");
    }
    Ok(())
}

/// What a GPU run needs to be compared with its hardware: bytes read per decoded token
/// (weights on the GPU + K/V at the benchmark's context) and the dispatches and submits it
/// takes, measured over one `tg` run.
struct GpuFigures {
    weight_bytes: u64,
    kv_bytes_per_token: f64,
    dispatches_per_token: f64,
    submits_per_token: f64,
}

impl std::fmt::Display for GpuFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: f64| b / 1e6;
        write!(
            f,
            "gpu per decoded token: {:.1} MB of weights + {:.2} MB of K/V read, {:.0} dispatches in {:.0} submits \
             (roofline: bandwidth in GB/s / {:.3} GB = tokens/s)",
            mb(self.weight_bytes as f64),
            mb(self.kv_bytes_per_token),
            self.dispatches_per_token,
            self.submits_per_token,
            (self.weight_bytes as f64 + self.kv_bytes_per_token) / 1e9
        )
    }
}

#[cfg(feature = "gpu")]
fn gpu_figures(model: &Model, args: &Args) -> Result<Option<GpuFigures>> {
    let placement = model.decoder.placement();
    if placement.adapter.is_none() || args.n_gen == 0 {
        return Ok(None);
    }
    let llm::Device::Gpu(ctx) = args.compute.device()? else {
        return Ok(None);
    };
    let (d0, s0) = ctx.work_counts();
    time_tg(model, args.n_gen, args.compute.kv_type)?;
    let (d1, s1) = ctx.work_counts();
    let n = args.n_gen as f64;
    let hp = model.hparams();
    // Every layer reads K and V of the cells so far: on average half the run's context.
    let kv_per_cell =
        (2 * hp.kv_dim() * args.compute.kv_type.bytes() * placement.gpu_layers) as f64;
    Ok(Some(GpuFigures {
        weight_bytes: placement.gpu_weight_bytes,
        kv_bytes_per_token: kv_per_cell * n / 2.0,
        dispatches_per_token: (d1 - d0) as f64 / n,
        submits_per_token: (s1 - s0) as f64 / n,
    }))
}

#[cfg(not(feature = "gpu"))]
fn gpu_figures(_model: &Model, _args: &Args) -> Result<Option<GpuFigures>> {
    Ok(None)
}
