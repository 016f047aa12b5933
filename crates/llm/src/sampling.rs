//! Token sampling with llama.cpp's semantics and default chain:
//! penalties -> top-k -> top-p -> min-p -> temperature -> weighted draw.
//!
//! Temperature <= 0 is greedy: the highest logit after penalties (lowest id on ties), no RNG.
//! The draw uses a small seeded PRNG (xoshiro256**), so a seed reproduces a run exactly.

use std::collections::{HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

/// Sampling settings; the defaults are llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 (or less) keeps all.
    pub top_k: i32,
    /// Keep the smallest set of most likely tokens whose probabilities reach `top_p`; 1 keeps all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 keeps all.
    pub min_p: f32,
    /// Divide positive logits / multiply negative logits of recent tokens by this; 1 is off.
    pub repeat_penalty: f32,
    /// Subtracted once from the logit of every recent token.
    pub presence_penalty: f32,
    /// Subtracted from a recent token's logit once per occurrence.
    pub frequency_penalty: f32,
    /// How many recent tokens the penalties look at; 0 turns them off, -1 means all seen so far.
    pub penalty_last_n: i32,
    /// `None`: seeded from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            penalty_last_n: 64,
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Pure argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    fn penalties_active(&self) -> bool {
        self.penalty_last_n != 0
            && (self.repeat_penalty != 1.0
                || self.presence_penalty != 0.0
                || self.frequency_penalty != 0.0)
    }
}

/// A token id and its (adjusted) logit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Candidate {
    id: u32,
    logit: f32,
}

/// Descending logit, then ascending id: the order every filter and tie-break uses.
fn by_logit_desc(a: &Candidate, b: &Candidate) -> std::cmp::Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// A sampler with its token history (for the penalties) and random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Xoshiro256,
    history: VecDeque<u32>,
    /// Reused between calls: a 262k vocabulary would otherwise allocate 2 MB per token.
    candidates: Vec<Candidate>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(clock_seed);
        Self {
            params,
            rng: Xoshiro256::new(seed),
            history: VecDeque::new(),
            candidates: Vec::new(),
        }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Records a token that became part of the sequence (prompt or generated), for penalties.
    pub fn accept(&mut self, token: u32) {
        self.history.push_back(token);
        let keep = match self.params.penalty_last_n {
            n if n < 0 => usize::MAX,
            n => n as usize,
        };
        while self.history.len() > keep {
            self.history.pop_front();
        }
    }

    /// Forgets the history (new conversation); the random state continues.
    pub fn reset(&mut self) {
        self.history.clear();
    }

    /// Picks the next token from the last position's logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let penalize = self.params.penalties_active() && !self.history.is_empty();
        if self.params.temperature <= 0.0 && !penalize {
            return argmax(logits);
        }
        let mut cands = std::mem::take(&mut self.candidates);
        cands.clear();
        cands.extend(logits.iter().enumerate().map(|(id, &logit)| Candidate {
            id: id as u32,
            // A NaN would poison every comparison below; treat it as impossible.
            logit: if logit.is_nan() {
                f32::NEG_INFINITY
            } else {
                logit
            },
        }));
        if penalize {
            apply_penalties(&mut cands, &self.history, &self.params);
        }
        let token = if self.params.temperature <= 0.0 {
            cands
                .iter()
                .copied()
                .min_by(by_logit_desc)
                .map_or(0, |c| c.id)
        } else {
            // top-p and min-p walk the list best first; a plain draw does not need it sorted,
            // which saves sorting a whole 262k vocabulary when top-k is off.
            let sort = self.params.top_p < 1.0 || self.params.min_p > 0.0;
            top_k(&mut cands, self.params.top_k, sort);
            top_p(&mut cands, self.params.top_p);
            min_p(&mut cands, self.params.min_p);
            let r = self.rng.next_f64();
            draw(&cands, self.params.temperature, r)
        };
        self.candidates = cands;
        token
    }
}

/// The index of the largest logit, lowest index on ties (NaN never wins); 0 for empty input.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_logit = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best_logit {
            best = i;
            best_logit = l;
        }
    }
    best as u32
}

/// llama.cpp's penalties, on candidates still indexed by token id: repeat divides a positive
/// logit (multiplies a negative one), then `count * frequency + presence` is subtracted.
fn apply_penalties(cands: &mut [Candidate], history: &VecDeque<u32>, p: &SamplingParams) {
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &t in history {
        *counts.entry(t).or_default() += 1;
    }
    for (&token, &count) in &counts {
        let Some(c) = cands.get_mut(token as usize) else {
            continue;
        };
        if c.logit <= 0.0 {
            c.logit *= p.repeat_penalty;
        } else {
            c.logit /= p.repeat_penalty;
        }
        c.logit -= count as f32 * p.frequency_penalty + p.presence_penalty;
    }
}

/// Keeps the `k` best (all when `k <= 0`), sorted best first when `sort` is set.
fn top_k(cands: &mut Vec<Candidate>, k: i32, sort: bool) {
    let k = if k <= 0 {
        cands.len()
    } else {
        (k as usize).min(cands.len())
    };
    if k == 0 {
        return;
    }
    if k < cands.len() {
        // O(n) selection, then only the survivors get sorted.
        cands.select_nth_unstable_by(k - 1, by_logit_desc);
        cands.truncate(k);
    }
    if sort {
        cands.sort_unstable_by(by_logit_desc);
    }
}

/// Softmax probabilities of the candidates, in their order.
fn probabilities(cands: &[Candidate]) -> Vec<f64> {
    let max = cands
        .iter()
        .map(|c| c.logit)
        .fold(f32::NEG_INFINITY, f32::max) as f64;
    let weight = |logit: f64| match max {
        // +inf logits share all the mass; all -inf leaves every weight 0 (the draw takes the first).
        f64::INFINITY => f64::from(u8::from(logit == f64::INFINITY)),
        f64::NEG_INFINITY => 0.0,
        _ => (logit - max).exp(),
    };
    let mut probs: Vec<f64> = cands.iter().map(|c| weight(c.logit as f64)).collect();
    let sum: f64 = probs.iter().sum();
    if sum > 0.0 {
        probs.iter_mut().for_each(|p| *p /= sum);
    }
    probs
}

/// Keeps the shortest best-first prefix whose probability mass reaches `p` (at least one).
fn top_p(cands: &mut Vec<Candidate>, p: f32) {
    if p >= 1.0 || cands.is_empty() {
        return;
    }
    let probs = probabilities(cands);
    let mut cum = 0.0f64;
    let mut keep = cands.len();
    for (i, prob) in probs.iter().enumerate() {
        cum += prob;
        if cum >= p as f64 {
            keep = i + 1;
            break;
        }
    }
    cands.truncate(keep);
}

/// Keeps tokens whose probability is at least `p` times the best one's, i.e. whose logit is at
/// least `max + ln(p)` (at least one).
fn min_p(cands: &mut Vec<Candidate>, p: f32) {
    if p <= 0.0 || cands.is_empty() {
        return;
    }
    let threshold = cands[0].logit + p.ln();
    let keep = cands
        .iter()
        .take_while(|c| c.logit >= threshold)
        .count()
        .max(1);
    cands.truncate(keep);
}

/// Scales by the temperature, softmaxes and picks where the cumulative mass passes `r`.
fn draw(cands: &[Candidate], temperature: f32, r: f64) -> u32 {
    let Some(first) = cands.first() else {
        return 0;
    };
    let scaled: Vec<Candidate> = cands
        .iter()
        .map(|c| Candidate {
            id: c.id,
            logit: c.logit / temperature,
        })
        .collect();
    let probs = probabilities(&scaled);
    let mut cum = 0.0;
    for (c, p) in scaled.iter().zip(&probs) {
        cum += p;
        if r < cum {
            return c.id;
        }
    }
    // Rounding left the mass just under 1: the last candidate with any probability.
    scaled
        .iter()
        .zip(&probs)
        .rev()
        .find(|(_, p)| **p > 0.0)
        .map_or(first.id, |(c, _)| c.id)
}

fn clock_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed);
    // Mix in a stack address so samplers made in the same nanosecond still differ.
    let local = 0u8;
    nanos ^ (&local as *const u8 as u64).rotate_left(32)
}

/// xoshiro256** (Blackman & Vigna), seeded through SplitMix64.
#[derive(Debug, Clone)]
pub struct Xoshiro256 {
    s: [u64; 4],
}

impl Xoshiro256 {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(logits: &[f32]) -> Vec<Candidate> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| Candidate {
                id: i as u32,
                logit: l,
            })
            .collect()
    }

    fn ids(c: &[Candidate]) -> Vec<u32> {
        c.iter().map(|c| c.id).collect()
    }

    #[test]
    fn greedy_is_argmax_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::greedy());
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NAN, -5.0, -5.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn greedy_with_penalties_uses_adjusted_logits() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        s.accept(0);
        // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&[3.0, 2.0, 1.0]), 1);
    }

    #[test]
    fn penalties_math_matches_llama_cpp() {
        let p = SamplingParams {
            repeat_penalty: 1.5,
            frequency_penalty: 0.25,
            presence_penalty: 0.5,
            ..SamplingParams::default()
        };
        let history: VecDeque<u32> = [0, 1, 1, 3].into_iter().collect();
        let mut c = cands(&[3.0, -2.0, 1.0, 0.0]);
        apply_penalties(&mut c, &history, &p);
        // token 0 (1x): 3/1.5 - 0.25 - 0.5 = 1.25; token 1 (2x): -2*1.5 - 0.5 - 0.5 = -4.0;
        // token 2 untouched; token 3 (1x): 0 * 1.5 - 0.75 = -0.75 (zero counts as non-positive).
        let got: Vec<f32> = c.iter().map(|c| c.logit).collect();
        assert_eq!(got, vec![1.25, -4.0, 1.0, -0.75]);
    }

    #[test]
    fn penalty_window_is_last_n() {
        let mut s = Sampler::new(SamplingParams {
            penalty_last_n: 2,
            repeat_penalty: 2.0,
            ..SamplingParams::greedy()
        });
        for t in [5, 6, 7] {
            s.accept(t);
        }
        assert_eq!(s.history.iter().copied().collect::<Vec<_>>(), vec![6, 7]);
    }

    #[test]
    fn top_k_selects_and_sorts() {
        let mut c = cands(&[0.5, 2.0, -1.0, 2.0, 1.0, 0.0]);
        top_k(&mut c, 3, true);
        assert_eq!(ids(&c), vec![1, 3, 4]);
        let mut all = cands(&[0.5, 2.0, -1.0]);
        top_k(&mut all, 0, true);
        assert_eq!(ids(&all), vec![1, 0, 2]);
        let mut unsorted = cands(&[0.5, 2.0, -1.0]);
        top_k(&mut unsorted, 0, false);
        assert_eq!(ids(&unsorted), vec![0, 1, 2]);
    }

    #[test]
    fn top_p_keeps_the_prefix_reaching_p() {
        // probabilities ~ [0.6439, 0.2369, 0.0871, 0.0321]
        let mut c = cands(&[3.0, 2.0, 1.0, 0.0]);
        top_p(&mut c, 0.85);
        assert_eq!(ids(&c), vec![0, 1]);
        let mut c = cands(&[3.0, 2.0, 1.0, 0.0]);
        top_p(&mut c, 0.5);
        assert_eq!(ids(&c), vec![0]);
        let mut c = cands(&[3.0, 2.0, 1.0, 0.0]);
        top_p(&mut c, 1.0);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn min_p_compares_to_the_best() {
        // p(x)/p(best) = exp(l - 3): 1, 0.368, 0.135, 0.0498
        let mut c = cands(&[3.0, 2.0, 1.0, 0.0]);
        min_p(&mut c, 0.1);
        assert_eq!(ids(&c), vec![0, 1, 2]);
        let mut c = cands(&[3.0, 2.0, 1.0, 0.0]);
        min_p(&mut c, 0.5);
        assert_eq!(ids(&c), vec![0]);
    }

    #[test]
    fn draw_follows_cumulative_mass_and_temperature() {
        let c = cands(&[0.0, 0.0]); // 50/50
        assert_eq!(draw(&c, 1.0, 0.49), 0);
        assert_eq!(draw(&c, 1.0, 0.51), 1);
        // A low temperature makes the best token dominate.
        let c = cands(&[1.0, 0.0]);
        assert_eq!(draw(&c, 0.01, 0.999_999), 0);
    }

    #[test]
    fn infinite_logits_do_not_break_the_draw() {
        let c = cands(&[f32::NEG_INFINITY, f32::INFINITY, 1.0]);
        assert_eq!(draw(&c, 1.0, 0.9), 1);
        let c = cands(&[f32::NEG_INFINITY, f32::NEG_INFINITY]);
        assert_eq!(draw(&c, 1.0, 0.5), 0);
        let mut s = Sampler::new(SamplingParams {
            seed: Some(3),
            ..SamplingParams::default()
        });
        assert_eq!(s.sample(&[f32::NAN, 0.0, f32::NAN]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..1000)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0)
            .collect();
        let params = SamplingParams {
            seed: Some(42),
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            temperature: 1.5,
            ..SamplingParams::default()
        };
        let run = |params: &SamplingParams| {
            let mut s = Sampler::new(params.clone());
            (0..50)
                .map(|_| {
                    let t = s.sample(&logits);
                    s.accept(t);
                    t
                })
                .collect::<Vec<_>>()
        };
        let a = run(&params);
        assert_eq!(a, run(&params));
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 5, "a hot sampler should vary: {a:?}");
        let other = run(&SamplingParams {
            seed: Some(43),
            ..params
        });
        assert_ne!(a, other);
    }

    #[test]
    fn default_chain_only_draws_from_survivors() {
        let mut logits = vec![-10.0f32; 5000];
        logits[10] = 5.0;
        logits[20] = 4.9;
        logits[30] = 4.8;
        let mut s = Sampler::new(SamplingParams {
            seed: Some(1),
            top_k: 2,
            ..SamplingParams::default()
        });
        for _ in 0..200 {
            let t = s.sample(&logits);
            assert!(t == 10 || t == 20, "{t}");
        }
    }

    #[test]
    fn xoshiro_is_uniformish() {
        let mut r = Xoshiro256::new(7);
        let n = 10_000;
        let mean: f64 = (0..n).map(|_| r.next_f64()).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
