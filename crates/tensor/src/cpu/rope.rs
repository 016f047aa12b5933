//! Rotary position embedding, every ggml variant.
//!
//! The angles follow ggml-cpu exactly: `theta_scale = base^(-2/n_dims)` once, then the angle of
//! pair `i` is built by repeated f32 multiplication (`theta_{i+1} = theta_i * theta_scale`,
//! starting from the position), divided by the pair's frequency factor and multiplied by
//! `freq_scale`; `cos`/`sin` are then scaled by `attn_factor` (YaRN's extrapolation mix is off).
//! Repeated multiplication is not `pos * base^(-2i/n)` to the last bit; matching the reference
//! engine's rounding matters more than matching the textbook formula.

use rayon::prelude::*;

use crate::ops::rope::{RopeConfig, RopeMode, fill_cache, rope_2d_configs, token_pos};

/// Rotates one head in place with a filled cache.
pub(crate) fn rotate_head(mode: &RopeMode, n_dims: usize, cache: &[(f32, f32)], head: &mut [f32]) {
    // (first index of the pair, distance to the second, index step)
    let (stride, offset) = match mode {
        RopeMode::Normal => (2, 1),
        RopeMode::Neox | RopeMode::MultiSection { .. } | RopeMode::Imrope { .. } => (1, n_dims / 2),
        RopeMode::Vision { .. } => (1, n_dims),
    };
    for (i, &(cos, sin)) in cache.iter().enumerate() {
        let a = i * stride;
        let b = a + offset;
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

/// Applies rope in place to `x` laid out `[n_tokens, n_heads, head_dim]`.
///
/// `positions` holds `n_tokens` values, or `4 * n_tokens` for the sectioned modes laid out as
/// ggml does: all t components, then all h, then all w, then all e.
pub fn rope(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    positions: &[i32],
    cfg: &RopeConfig,
) {
    cfg.check(x.len(), n_tokens, n_heads, head_dim, positions.len());
    if x.is_empty() {
        return;
    }
    let pairs = cfg.rotated_pairs(head_dim);
    x.par_chunks_mut(n_heads * head_dim)
        .enumerate()
        .with_min_len(4)
        .for_each_init(
            || vec![(0f32, 0f32); pairs],
            |cache, (t, token)| {
                fill_cache(cfg, token_pos(&cfg.mode, positions, n_tokens, t), cache);
                for head in token.chunks_exact_mut(head_dim) {
                    rotate_head(&cfg.mode, cfg.n_dims, cache, head);
                }
            },
        );
}

/// The 2-D rope of Pixtral-style vision encoders (llama.cpp's `build_rope_2d`): the first
/// half of every head is rotated like `Normal` rope over `head_dim / 2` dims with `pos_a`
/// (patch row), the second half with `pos_b` (patch column). With `interleave_freq` the second
/// half's angles are scaled by `base^(-2/head_dim)` so the halves take the even and odd
/// frequencies of one `head_dim`-wide rope.
pub fn rope_2d(
    x: &mut [f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    pos_a: &[i32],
    pos_b: &[i32],
    freq_base: f32,
    interleave_freq: bool,
) {
    let half = head_dim / 2;
    assert!(
        half.is_multiple_of(2),
        "rope_2d: head_dim {head_dim} must be a multiple of 4"
    );
    assert_eq!(x.len(), n_tokens * n_heads * head_dim, "rope_2d: x length");
    assert!(
        pos_a.len() == n_tokens && pos_b.len() == n_tokens,
        "rope_2d: positions length"
    );
    if x.is_empty() {
        return;
    }
    let (cfg_a, cfg_b) = rope_2d_configs(head_dim, freq_base, interleave_freq);
    x.par_chunks_mut(n_heads * head_dim)
        .enumerate()
        .with_min_len(4)
        .for_each_init(
            || (vec![(0f32, 0f32); half / 2], vec![(0f32, 0f32); half / 2]),
            |(ca, cb), (t, token)| {
                fill_cache(&cfg_a, [pos_a[t], 0, 0, 0], ca);
                fill_cache(&cfg_b, [pos_b[t], 0, 0, 0], cb);
                for head in token.chunks_exact_mut(head_dim) {
                    let (first, second) = head.split_at_mut(half);
                    rotate_head(&RopeMode::Normal, half, ca, first);
                    rotate_head(&RopeMode::Normal, half, cb, second);
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: &RopeConfig, x: &[f32], head_dim: usize, pos: &[i32]) -> Vec<f32> {
        let mut y = x.to_vec();
        let n_tokens = pos.len() / cfg.mode.positions_per_token();
        rope(
            &mut y,
            n_tokens,
            x.len() / n_tokens / head_dim,
            head_dim,
            pos,
            cfg,
        );
        y
    }

    fn close(a: &[f32], b: &[f32]) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 1e-5, "index {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }

    /// Rotation of (x0, x1) by angle t.
    fn rot(x0: f32, x1: f32, t: f32) -> (f32, f32) {
        (x0 * t.cos() - x1 * t.sin(), x0 * t.sin() + x1 * t.cos())
    }

    #[test]
    fn normal_rotates_adjacent_pairs() {
        // head_dim 6, n_dims 4: pairs (0,1) angle p, (2,3) angle p/100, dims 4,5 pass.
        let cfg = RopeConfig::new(RopeMode::Normal, 4, 10000.0);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = run(&cfg, &x, 6, &[3]);
        let (a, b) = rot(1.0, 2.0, 3.0);
        let (c, d) = rot(3.0, 4.0, 3.0 / 100.0);
        close(&y, &[a, b, c, d, 5.0, 6.0]);
    }

    #[test]
    fn neox_rotates_halves() {
        let cfg = RopeConfig::new(RopeMode::Neox, 4, 10000.0);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let y = run(&cfg, &x, 6, &[2]);
        let (a, c) = rot(1.0, 3.0, 2.0);
        let (b, d) = rot(2.0, 4.0, 2.0 / 100.0);
        close(&y, &[a, b, c, d, 5.0, 6.0]);
    }

    #[test]
    fn freq_scale_factors_and_attn_factor() {
        let mut cfg = RopeConfig::new(RopeMode::Neox, 4, 10000.0);
        cfg.freq_scale = 0.5;
        cfg.freq_factors = Some(vec![2.0, 4.0]);
        cfg.attn_factor = 1.5;
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = run(&cfg, &x, 4, &[8]);
        let (a, c) = rot(1.0, 3.0, 8.0 / 2.0 * 0.5);
        let (b, d) = rot(2.0, 4.0, 8.0 / 100.0 / 4.0 * 0.5);
        close(&y, &[a * 1.5, b * 1.5, c * 1.5, d * 1.5]);
    }

    #[test]
    fn multi_section_picks_component_per_section() {
        // n_dims 8 -> 4 pairs; sections [2,1,1,0]: pairs 0,1 use t, pair 2 uses h, pair 3 w.
        let cfg = RopeConfig::new(
            RopeMode::MultiSection {
                sections: [2, 1, 1, 0],
            },
            8,
            10000.0,
        );
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let (pt, ph, pw) = (5.0f32, 7.0f32, 11.0f32);
        let y = run(&cfg, &x, 8, &[5, 7, 11, 0]);
        let ts = 10000f32.powf(-2.0 / 8.0);
        let ang = [pt, pt * ts, ph * ts * ts, pw * ts * ts * ts];
        let mut want = x.clone();
        for i in 0..4 {
            let (a, b) = rot(x[i], x[i + 4], ang[i]);
            want[i] = a;
            want[i + 4] = b;
        }
        close(&y, &want);
    }

    #[test]
    fn imrope_interleaves_components() {
        // sections [2,1,1,0], sect_dims 4: sector 0 t, 1 h, 2 w, 3 -> t (sector%3==0, < 6).
        let cfg = RopeConfig::new(
            RopeMode::Imrope {
                sections: [2, 1, 1, 0],
            },
            8,
            10000.0,
        );
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let y = run(&cfg, &x, 8, &[5, 7, 11, 13]);
        let ts = 10000f32.powf(-2.0 / 8.0);
        let ang = [5.0, 7.0 * ts, 11.0 * ts * ts, 5.0 * ts * ts * ts];
        let mut want = x.clone();
        for i in 0..4 {
            let (a, b) = rot(x[i], x[i + 4], ang[i]);
            want[i] = a;
            want[i + 4] = b;
        }
        close(&y, &want);
    }

    #[test]
    fn imrope_sector_past_sections_uses_e() {
        // sections [1,1,1,1]: sector 3 -> %3==0 but not < 3*1 -> e component.
        let cfg = RopeConfig::new(
            RopeMode::Imrope {
                sections: [1, 1, 1, 1],
            },
            8,
            100.0,
        );
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let y = run(&cfg, &x, 8, &[2, 3, 4, 9]);
        let ts = 100f32.powf(-2.0 / 8.0);
        let ang = [2.0, 3.0 * ts, 4.0 * ts * ts, 9.0 * ts * ts * ts];
        let mut want = x.clone();
        for i in 0..4 {
            let (a, b) = rot(x[i], x[i + 4], ang[i]);
            want[i] = a;
            want[i + 4] = b;
        }
        close(&y, &want);
    }

    #[test]
    fn vision_rotates_whole_head_and_restarts_sections() {
        // head_dim 8, n_dims 4: pairs (i, i+4) for i in 0..4; theta_scale = base^(-2/4).
        // sections [2,2,0,0]: pairs 0,1 use t; pairs 2,3 restart their angles from h.
        let cfg = RopeConfig::new(
            RopeMode::Vision {
                sections: [2, 2, 0, 0],
            },
            4,
            10000.0,
        );
        let x: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let y = run(&cfg, &x, 8, &[3, 5, 0, 0]);
        let ts = 10000f32.powf(-2.0 / 4.0);
        let ang = [3.0, 3.0 * ts, 5.0, 5.0 * ts];
        let mut want = x.clone();
        for i in 0..4 {
            let (a, b) = rot(x[i], x[i + 4], ang[i]);
            want[i] = a;
            want[i + 4] = b;
        }
        close(&y, &want);
    }

    #[test]
    fn every_head_and_token_uses_its_position() {
        let cfg = RopeConfig::new(RopeMode::Neox, 2, 10000.0);
        // 2 tokens, 2 heads, head_dim 2.
        let x = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0];
        let y = run(&cfg, &x, 2, &[1, 2]);
        let (a, b) = rot(1.0, 0.0, 1.0);
        let (c, d) = rot(0.0, 1.0, 1.0);
        let (e, f) = rot(1.0, 0.0, 2.0);
        let (g, h) = rot(0.0, 1.0, 2.0);
        close(&y, &[a, b, c, d, e, f, g, h]);
    }
}
