//! `mtmd bench --parallel 1,2,4,8`: continuous-batching throughput, like llama.cpp's
//! `llama-batched-bench`. For each batch size B, B sessions each get an `-p`-token prompt
//! (prompt pieces of all sessions share steps of at most 512 rows), then generate `-n`
//! tokens each, one step per token for all of them together. Reports aggregate and
//! per-sequence tokens/s.

use std::time::Instant;

use anyhow::{Result, bail};
use llm::{KvType, Logits, Model, Session, StepInput};

/// One batch size's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParallelRow {
    pub sequences: usize,
    pub n_prompt: usize,
    pub n_gen: usize,
    /// Cells in the caches at the end (all sessions).
    pub n_kv: usize,
    pub prompt_s: f64,
    pub prompt_tokens_per_s: f64,
    pub gen_s: f64,
    /// Generated tokens of all sequences per second.
    pub gen_tokens_per_s: f64,
    /// The same per sequence (what one user sees).
    pub gen_tokens_per_s_per_seq: f64,
}

/// Prompt rows per step during the prompt phase (the decoder's ubatch).
const STEP_ROWS: usize = llm::decoder::MAX_UBATCH;

/// A prompt of `n` ordinary tokens, different for each sequence (no shared prefix).
fn prompt(model: &Model, seq: usize, n: usize) -> Vec<u32> {
    let vocab = model.tokenizer.n_vocab() as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (seq as u64 + 1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Keep clear of the control tokens at the start of most vocabularies.
            (1000 + state % (vocab.saturating_sub(1000).max(1))) as u32 % vocab as u32
        })
        .collect()
}

pub fn measure(
    model: &Model,
    sequences: usize,
    n_prompt: usize,
    n_gen: usize,
    kv: KvType,
) -> Result<ParallelRow> {
    if sequences == 0 {
        bail!("--parallel sizes must be at least 1");
    }
    let n_ctx = n_prompt + n_gen + 1;
    let mut sessions: Vec<Session> = (0..sequences)
        .map(|_| model.new_session(n_ctx, kv))
        .collect::<llm::Result<_>>()?;
    let prompts: Vec<Vec<u32>> = (0..sequences).map(|s| prompt(model, s, n_prompt)).collect();
    let mut next = vec![0u32; sequences];

    let start = Instant::now();
    if n_prompt > 0 {
        // Fill steps of STEP_ROWS rows with pieces of the prompts, in order.
        let per_seq = (STEP_ROWS / sequences).max(1);
        let mut done = vec![0usize; sequences];
        while done.iter().any(|&d| d < n_prompt) {
            let mut steps: Vec<(&mut Session, StepInput)> = Vec::new();
            let mut which = Vec::new();
            for (i, s) in sessions.iter_mut().enumerate() {
                if done[i] >= n_prompt {
                    continue;
                }
                let end = (done[i] + per_seq).min(n_prompt);
                let last = end == n_prompt;
                steps.push((
                    s,
                    StepInput::Tokens {
                        tokens: &prompts[i][done[i]..end],
                        logits: if last { Logits::Last } else { Logits::None },
                    },
                ));
                which.push((i, end));
            }
            let out = model.decode_many(&mut steps)?;
            for ((i, end), logits) in which.into_iter().zip(out) {
                done[i] = end;
                if end == n_prompt {
                    next[i] = llm::sampling::argmax(&logits);
                }
            }
        }
    }
    let prompt_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    for _ in 0..n_gen {
        let tokens = next.clone();
        let mut steps: Vec<(&mut Session, StepInput)> = sessions
            .iter_mut()
            .zip(&tokens)
            .map(|(s, t)| {
                (
                    s,
                    StepInput::Tokens {
                        tokens: std::slice::from_ref(t),
                        logits: Logits::Last,
                    },
                )
            })
            .collect();
        let out = model.decode_many(&mut steps)?;
        for (n, logits) in next.iter_mut().zip(out) {
            *n = llm::sampling::argmax(&logits);
        }
    }
    let gen_s = start.elapsed().as_secs_f64();
    let rate = |tokens: usize, s: f64| if s > 0.0 { tokens as f64 / s } else { 0.0 };
    Ok(ParallelRow {
        sequences,
        n_prompt,
        n_gen,
        n_kv: sessions.iter().map(Session::n_tokens).sum(),
        prompt_s,
        prompt_tokens_per_s: rate(sequences * n_prompt, prompt_s),
        gen_s,
        gen_tokens_per_s: rate(sequences * n_gen, gen_s),
        gen_tokens_per_s_per_seq: rate(n_gen, gen_s),
    })
}

/// Measures every batch size in `sizes` and prints the table (or JSON).
pub fn run(
    model: &Model,
    sizes: &[usize],
    n_prompt: usize,
    n_gen: usize,
    kv: KvType,
    json: bool,
) -> Result<()> {
    // Warm-up: touch the weights once, untimed.
    measure(model, 1, 8.min(n_prompt.max(1)), 1, kv)?;
    let mut rows = Vec::with_capacity(sizes.len());
    if !json {
        println!(
            "| {:>4} | {:>5} | {:>5} | {:>6} | {:>8} | {:>10} | {:>8} | {:>10} | {:>12} |",
            "B", "PP", "TG", "N_KV", "T_PP s", "S_PP t/s", "T_TG s", "S_TG t/s", "per seq t/s"
        );
        println!(
            "|------|-------|-------|--------|----------|------------|----------|------------|--------------|"
        );
    }
    for &b in sizes {
        let r = measure(model, b, n_prompt, n_gen, kv)?;
        if !json {
            println!(
                "| {:>4} | {:>5} | {:>5} | {:>6} | {:>8.3} | {:>10.2} | {:>8.3} | {:>10.2} | {:>12.2} |",
                r.sequences,
                r.n_prompt,
                r.n_gen,
                r.n_kv,
                r.prompt_s,
                r.prompt_tokens_per_s,
                r.gen_s,
                r.gen_tokens_per_s,
                r.gen_tokens_per_s_per_seq
            );
        }
        rows.push(r);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sequence_gets_its_tokens() {
        let path = testkit::fixture("qwen2vl/model.gguf");
        let model = Model::load(path).unwrap();
        let r = measure(&model, 3, 20, 4, KvType::F16).unwrap();
        assert_eq!(r.n_kv, 3 * (20 + 4));
        assert!(r.gen_tokens_per_s > 0.0 && r.prompt_tokens_per_s > 0.0);
        assert!(measure(&model, 0, 4, 4, KvType::F16).is_err());
    }
}
