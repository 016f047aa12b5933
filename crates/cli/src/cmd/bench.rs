//! `mtmd bench`: llama-bench-style throughput of prompt processing (ppN) and token
//! generation (tgN), median over repetitions.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;
use llm::{KvType, Logits, Model};

use super::common::{load_model, set_threads};

#[derive(ClapArgs)]
pub struct Args {
    /// Text model GGUF.
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Prompt tokens processed in one batch (0: skip).
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    /// Tokens generated one at a time (0: skip).
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    /// Compute threads.
    #[arg(short = 't', long, default_value_t = 2)]
    threads: usize,
    /// Repetitions per test.
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// KV cache type.
    #[arg(long, default_value = "f16")]
    kv_type: KvType,
    /// Print a JSON array instead of the table.
    #[arg(long)]
    json: bool,
}

struct Row {
    test: String,
    tokens_per_s: f64,
    spread: f64,
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
    let mut session = model.new_session(n + 1, kv);
    let t0 = Instant::now();
    session.decode_tokens(model, &tokens, Logits::Last)?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn time_tg(model: &Model, n: usize, kv: KvType) -> Result<f64> {
    let tokens = bench_tokens(model, n);
    let mut session = model.new_session(n + 1, kv);
    let t0 = Instant::now();
    for t in &tokens {
        session.decode_tokens(model, std::slice::from_ref(t), Logits::Last)?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

pub fn run(args: Args) -> Result<()> {
    if args.repetitions == 0 {
        bail!("--repetitions must be at least 1");
    }
    set_threads(Some(args.threads))?;
    let model = load_model(&args.model)?;
    // Warm-up: touch every weight page and JIT nothing; not timed.
    time_pp(&model, 8.min(args.n_prompt.max(1)), args.kv_type)?;

    let mut rows = Vec::new();
    let mut measure = |test: String, f: &dyn Fn() -> Result<f64>| -> Result<()> {
        let samples: Vec<f64> = (0..args.repetitions).map(|_| f()).collect::<Result<_>>()?;
        let (median, spread) = stats(&samples);
        rows.push(Row {
            test,
            tokens_per_s: median,
            spread,
        });
        Ok(())
    };
    if args.n_prompt > 0 {
        measure(format!("pp{}", args.n_prompt), &|| {
            time_pp(&model, args.n_prompt, args.kv_type)
        })?;
    }
    if args.n_gen > 0 {
        measure(format!("tg{}", args.n_gen), &|| {
            time_tg(&model, args.n_gen, args.kv_type)
        })?;
    }

    if args.json {
        let arr: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "test": r.test,
                    "threads": args.threads,
                    "tokens_per_s": r.tokens_per_s,
                    "spread": r.spread,
                })
            })
            .collect();
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
            "CPU",
            args.threads,
            r.test,
            format!("{:.2} ± {:.2}", r.tokens_per_s, r.spread)
        );
    }
    Ok(())
}
