//! Rotary position embedding over a `[n_tokens, n_heads, head_dim]` tensor.
//!
//! Contract (ggml-cpu's `rope`, YaRN mix off): pair `i` of a token with position component
//! `p` is rotated by `freq_scale * (theta_i / freq_factor_i)` where `theta_0 = p` and
//! `theta_{i+1} = theta_i * base^(-2/n_dims)` in f32; `cos`/`sin` are scaled by `attn_factor`.
//! See [`RopeMode`] for which dimensions pair up and which component `p` is.

use crate::{Result, Tensor, TensorError};

// ---------------------------------------------------------------- contract

/// Which dimensions rotate together and which position component drives each pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// ggml mode 0: pairs `(2i, 2i+1)` for `2i < n_dims`.
    Normal,
    /// ggml mode 2 (GPT-NeoX): pairs `(i, i + n_dims/2)`.
    Neox,
    /// ggml mode 8 (Qwen2-VL text M-RoPE): NeoX pairs; pair `i` falls in section
    /// `i % sum(sections)`, whose order is t, h, w, e.
    MultiSection { sections: [usize; 4] },
    /// ggml mode 24 (Qwen2-VL / 2.5-VL vision encoder): `n_dims == head_dim / 2`, pairs
    /// `(i, i + n_dims)` over the whole head; each section restarts its angle sequence.
    Vision { sections: [usize; 4] },
    /// ggml mode 40 (Qwen3-VL interleaved M-RoPE): NeoX pairs; sections interleave t, h, w.
    Imrope { sections: [usize; 4] },
}

impl RopeMode {
    /// The integer ggml stores in `op_params` for this mode.
    pub fn ggml_mode(&self) -> i32 {
        match self {
            RopeMode::Normal => 0,
            RopeMode::Neox => 2,
            RopeMode::MultiSection { .. } => 8,
            RopeMode::Vision { .. } => 24,
            RopeMode::Imrope { .. } => 40,
        }
    }

    /// The mode for a ggml integer mode, or `None` for modes we do not know.
    pub fn from_ggml(mode: i32, sections: [usize; 4]) -> Option<Self> {
        Some(match mode {
            0 => RopeMode::Normal,
            2 => RopeMode::Neox,
            8 => RopeMode::MultiSection { sections },
            24 => RopeMode::Vision { sections },
            40 => RopeMode::Imrope { sections },
            _ => return None,
        })
    }

    /// Sectioned modes take four position components per token.
    pub fn positions_per_token(&self) -> usize {
        match self {
            RopeMode::Normal | RopeMode::Neox => 1,
            _ => 4,
        }
    }

    pub(crate) fn sections(&self) -> Option<[usize; 4]> {
        match *self {
            RopeMode::MultiSection { sections }
            | RopeMode::Vision { sections }
            | RopeMode::Imrope { sections } => Some(sections),
            RopeMode::Normal | RopeMode::Neox => None,
        }
    }
}

/// Parameters of one rope application (what ggml_rope_ext / ggml_rope_multi take).
#[derive(Clone, Debug)]
pub struct RopeConfig {
    pub mode: RopeMode,
    /// Rotated dimensions per head; dimensions past it pass through (except in `Vision` mode,
    /// where `n_dims == head_dim / 2` and the whole head rotates).
    pub n_dims: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    /// Per-pair divisors of the angle (e.g. Llama 3 long-context factors), at least `n_dims/2`.
    pub freq_factors: Option<Vec<f32>>,
    /// Multiplies `cos` and `sin` (ggml's `attn_factor`, YaRN's `mscale`).
    pub attn_factor: f32,
}

impl RopeConfig {
    /// A plain rope: no frequency scaling, no factors.
    pub fn new(mode: RopeMode, n_dims: usize, freq_base: f32) -> Self {
        Self {
            mode,
            n_dims,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
            attn_factor: 1.0,
        }
    }

    /// Number of (cos, sin) pairs a head needs, i.e. how many pairs rotate.
    pub(crate) fn rotated_pairs(&self, head_dim: usize) -> usize {
        match self.mode {
            RopeMode::Vision { .. } => head_dim / 2,
            _ => self.n_dims / 2,
        }
    }

    /// Panics with a clear message on inconsistent arguments (caller bugs, not data errors).
    pub(crate) fn check(
        &self,
        x_len: usize,
        n_tokens: usize,
        n_heads: usize,
        head_dim: usize,
        n_pos: usize,
    ) {
        assert_eq!(x_len, n_tokens * n_heads * head_dim, "rope: x length");
        assert!(
            self.n_dims <= head_dim && self.n_dims.is_multiple_of(2),
            "rope: n_dims {} must be even and <= head_dim {head_dim}",
            self.n_dims
        );
        assert_eq!(
            n_pos,
            n_tokens * self.mode.positions_per_token(),
            "rope: positions length for {:?}",
            self.mode
        );
        if let RopeMode::Vision { .. } = self.mode {
            assert_eq!(
                self.n_dims * 2,
                head_dim,
                "rope: vision mode needs n_dims == head_dim/2"
            );
        }
        if let Some(s) = self.mode.sections() {
            assert!(s.iter().sum::<usize>() > 0, "rope: all sections are zero");
        }
    }
}

/// The angle table of the contract, as the kernels build it (one pass of repeated
/// multiplication per token). Fills `cache[i] = (cos, sin)` of pair `i` for the token whose position components are
/// `pos` (one value, or t/h/w/e for the sectioned modes).
pub(crate) fn fill_cache(cfg: &RopeConfig, pos: [i32; 4], cache: &mut [(f32, f32)]) {
    let theta_scale = cfg.freq_base.powf(-2.0 / cfg.n_dims as f32);
    let factor = |i: usize| {
        cfg.freq_factors
            .as_ref()
            .and_then(|f| f.get(i).copied())
            .unwrap_or(1.0)
    };
    let cos_sin = |theta: f32, i: usize| {
        let theta = cfg.freq_scale * (theta / factor(i));
        (theta.cos() * cfg.attn_factor, theta.sin() * cfg.attn_factor)
    };
    let Some(sections) = cfg.mode.sections() else {
        let mut theta = pos[0] as f32;
        for (i, c) in cache.iter_mut().enumerate() {
            *c = cos_sin(theta, i);
            theta *= theta_scale;
        }
        return;
    };

    let base = pos.map(|p| p as f32);
    let mut theta = base;
    let sect_dims: usize = sections.iter().sum();
    let sec_w = sections[0] + sections[1];
    let sec_e = sec_w + sections[2];
    let interleaved = matches!(cfg.mode, RopeMode::Imrope { .. });
    let restart_sections = matches!(cfg.mode, RopeMode::Vision { .. });
    for (i, c) in cache.iter_mut().enumerate() {
        let sector = i % sect_dims;
        if restart_sections {
            // Each section's angles start again from its own position component.
            let starts = [0, sections[0], sec_w, sec_e];
            for k in 0..4 {
                if sector == starts[k] {
                    theta[k] = base[k];
                    break;
                }
            }
        }
        let component = if interleaved {
            if sector % 3 == 1 && sector < 3 * sections[1] {
                1
            } else if sector % 3 == 2 && sector < 3 * sections[2] {
                2
            } else if sector.is_multiple_of(3) && sector < 3 * sections[0] {
                0
            } else {
                3
            }
        } else if sector < sections[0] {
            0
        } else if sector < sec_w {
            1
        } else if sector < sec_e {
            2
        } else {
            3
        };
        *c = cos_sin(theta[component], i);
        for t in &mut theta {
            *t *= theta_scale;
        }
    }
}

/// Position components of token `t` (t, h, w, e; a single position fills only the first).
pub(crate) fn token_pos(mode: &RopeMode, positions: &[i32], n_tokens: usize, t: usize) -> [i32; 4] {
    if mode.positions_per_token() == 1 {
        [positions[t], 0, 0, 0]
    } else {
        std::array::from_fn(|k| positions[t + k * n_tokens])
    }
}

/// The two half-head configurations of the 2-D rope (`cpu::rope_2d`): `Normal` rope over
/// `head_dim / 2` dims for each half, the second half's angles scaled by `base^(-2/head_dim)`
/// with `interleave_freq`.
pub fn rope_2d_configs(
    head_dim: usize,
    freq_base: f32,
    interleave_freq: bool,
) -> (RopeConfig, RopeConfig) {
    let first = RopeConfig::new(RopeMode::Normal, head_dim / 2, freq_base);
    let mut second = first.clone();
    if interleave_freq {
        second.freq_scale = freq_base.powf(-2.0 / head_dim as f32);
    }
    (first, second)
}

// ---------------------------------------------------------------- op and reference

fn mismatch(detail: String) -> TensorError {
    TensorError::ShapeMismatch { op: "rope", detail }
}

/// Checks the shape/config/positions agreement that the kernel asserts.
fn validate(shape: &[usize], n_pos: usize, cfg: &RopeConfig) -> Result<(usize, usize, usize)> {
    let &[n_tokens, n_heads, head_dim] = shape else {
        return Err(mismatch(format!(
            "x must be [tokens, heads, head_dim], got {shape:?}"
        )));
    };
    if !cfg.n_dims.is_multiple_of(2) || cfg.n_dims > head_dim {
        return Err(mismatch(format!(
            "n_dims {} must be even and <= head_dim {head_dim}",
            cfg.n_dims
        )));
    }
    if matches!(cfg.mode, RopeMode::Vision { .. }) && cfg.n_dims * 2 != head_dim {
        return Err(mismatch(format!(
            "vision rope needs n_dims == head_dim / 2, got {} and {head_dim}",
            cfg.n_dims
        )));
    }
    let per_token = cfg.mode.positions_per_token();
    if n_pos != n_tokens * per_token {
        return Err(mismatch(format!(
            "{n_tokens} tokens need {} positions for {:?}, got {n_pos}",
            n_tokens * per_token,
            cfg.mode
        )));
    }
    if let RopeMode::MultiSection { sections }
    | RopeMode::Vision { sections }
    | RopeMode::Imrope { sections } = cfg.mode
        && sections.iter().sum::<usize>() == 0
    {
        return Err(mismatch("all rope sections are zero".into()));
    }
    Ok((n_tokens, n_heads, head_dim))
}

/// Rope of `x` (`[n_tokens, n_heads, head_dim]`, any float dtype) into a new f32 tensor.
pub fn rope(x: &Tensor, positions: &[i32], cfg: &RopeConfig) -> Result<Tensor> {
    super::try_gpu!(x, crate::gpu::ops::rope(x, positions, cfg));
    let (n_tokens, n_heads, head_dim) = validate(x.shape(), positions.len(), cfg)?;
    let mut data = x.to_f32_vec()?;
    crate::cpu::rope(&mut data, n_tokens, n_heads, head_dim, positions, cfg);
    Tensor::from_f32(x.shape(), &data)
}

/// Which position component (0 t, 1 h, 2 w, 3 e) drives pair `i`, and how many angle steps
/// it is from the start of its sequence.
fn component_and_steps(mode: &RopeMode, i: usize) -> (usize, usize) {
    match *mode {
        RopeMode::Normal | RopeMode::Neox => (0, i),
        RopeMode::MultiSection { sections: s } => {
            let sector = i % s.iter().sum::<usize>();
            let c = if sector < s[0] {
                0
            } else if sector < s[0] + s[1] {
                1
            } else if sector < s[0] + s[1] + s[2] {
                2
            } else {
                3
            };
            (c, i)
        }
        RopeMode::Imrope { sections: s } => {
            let sector = i % s.iter().sum::<usize>();
            let c = match sector % 3 {
                1 if sector < 3 * s[1] => 1,
                2 if sector < 3 * s[2] => 2,
                0 if sector < 3 * s[0] => 0,
                _ => 3,
            };
            (c, i)
        }
        RopeMode::Vision { sections: s } => {
            // Sections restart their angle sequence; the restart points are the section
            // starts (a zero-sized section shares its start with the next one and the first
            // of them wins, as in ggml).
            let sector = i % s.iter().sum::<usize>();
            let starts = [0, s[0], s[0] + s[1], s[0] + s[1] + s[2]];
            let c = if sector < s[0] {
                0
            } else if sector < starts[2] {
                1
            } else if sector < starts[3] {
                2
            } else {
                3
            };
            // The running angle of component c was last reset at the latest pair j <= i whose
            // sector is a start owned by c.
            let owner = |sector: usize| (0..4).find(|&k| starts[k] == sector);
            let mut last_reset = None;
            for j in (0..=i).rev() {
                if owner(j % s.iter().sum::<usize>()) == Some(c) {
                    last_reset = Some(j);
                    break;
                }
            }
            (c, last_reset.map_or(i, |j| i - j))
        }
    }
}

/// Scalar reference: the plain definition, one element pair at a time.
pub fn reference(
    x: &[f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    positions: &[i32],
    cfg: &RopeConfig,
) -> Vec<f32> {
    let mut y = x.to_vec();
    let theta_scale = cfg.freq_base.powf(-2.0 / cfg.n_dims as f32);
    let (n_pairs, offset, stride) = match cfg.mode {
        RopeMode::Normal => (cfg.n_dims / 2, 1, 2),
        RopeMode::Vision { .. } => (head_dim / 2, cfg.n_dims, 1),
        _ => (cfg.n_dims / 2, cfg.n_dims / 2, 1),
    };
    for t in 0..n_tokens {
        for h in 0..n_heads {
            let head = (t * n_heads + h) * head_dim;
            for i in 0..n_pairs {
                let (c, steps) = component_and_steps(&cfg.mode, i);
                let p = if cfg.mode.positions_per_token() == 1 {
                    positions[t]
                } else {
                    positions[c * n_tokens + t]
                };
                let mut theta = p as f32;
                for _ in 0..steps {
                    theta *= theta_scale;
                }
                let ff = cfg
                    .freq_factors
                    .as_ref()
                    .and_then(|f| f.get(i).copied())
                    .unwrap_or(1.0);
                let theta = cfg.freq_scale * (theta / ff);
                let (cos, sin) = (theta.cos() * cfg.attn_factor, theta.sin() * cfg.attn_factor);
                let a = head + i * stride;
                let b = a + offset;
                let (x0, x1) = (x[a], x[b]);
                y[a] = x0 * cos - x1 * sin;
                y[b] = x0 * sin + x1 * cos;
            }
        }
    }
    y
}

/// Scalar reference of the 2-D rope (`cpu::rope_2d`): each half of every head through
/// [`reference`] with its own positions.
pub fn reference_2d(
    x: &[f32],
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    pos_a: &[i32],
    pos_b: &[i32],
    freq_base: f32,
    interleave_freq: bool,
) -> Vec<f32> {
    let half = head_dim / 2;
    let (cfg_a, cfg_b) = rope_2d_configs(head_dim, freq_base, interleave_freq);
    let halves = |k: usize| -> Vec<f32> {
        x.chunks_exact(head_dim)
            .flat_map(|h| h[k * half..(k + 1) * half].iter().copied())
            .collect()
    };
    let a = reference(&halves(0), n_tokens, n_heads, half, pos_a, &cfg_a);
    let b = reference(&halves(1), n_tokens, n_heads, half, pos_b, &cfg_b);
    a.chunks_exact(half)
        .zip(b.chunks_exact(half))
        .flat_map(|(p, q)| p.iter().chain(q).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_op_matches_reference_and_checks_shapes() {
        let cfg = RopeConfig::new(RopeMode::Neox, 4, 10000.0);
        let data: Vec<f32> = (0..2 * 3 * 6).map(|v| (v as f32 * 0.37).sin()).collect();
        let x = Tensor::from_f32(&[2, 3, 6], &data).unwrap();
        let y = rope(&x, &[4, 9], &cfg).unwrap();
        assert_eq!(
            y.as_f32().unwrap(),
            reference(&data, 2, 3, 6, &[4, 9], &cfg).as_slice()
        );
        assert!(rope(&x, &[4], &cfg).is_err());
        let bad = RopeConfig::new(
            RopeMode::Vision {
                sections: [1, 1, 0, 0],
            },
            4,
            1e4,
        );
        assert!(rope(&x, &[0; 8], &bad).is_err());
        let x2 = Tensor::from_f32(&[2, 18], &data).unwrap();
        assert!(rope(&x2, &[4, 9], &cfg).is_err());
    }

    #[test]
    fn ggml_mode_round_trips() {
        for m in [
            RopeMode::Normal,
            RopeMode::Neox,
            RopeMode::MultiSection {
                sections: [1, 2, 3, 4],
            },
            RopeMode::Vision {
                sections: [1, 2, 3, 4],
            },
            RopeMode::Imrope {
                sections: [1, 2, 3, 4],
            },
        ] {
            assert_eq!(RopeMode::from_ggml(m.ggml_mode(), [1, 2, 3, 4]), Some(m));
        }
        assert_eq!(RopeMode::from_ggml(1, [0; 4]), None);
    }
}
