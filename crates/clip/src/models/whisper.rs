//! Whisper-style audio encoders: a conv1d stem (stride 1, then 2, each followed by exact GELU)
//! over a log-mel window, learned positions, a layer-norm transformer with exact-GELU FFNs, and
//! the projector of each family:
//! - `qwen2a` (Qwen2-Audio): average pooling of frame pairs before the final norm, one linear;
//! - `voxtral`: four consecutive frames stacked into one row, then a GELU MLP.

use half::f16;
use tensor::Tensor;
use tensor::cpu;

use crate::ClipError;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::{Embeddings, Encoder};
use crate::projector::{Defaults, Framing, Input, Projector};
use crate::tower::{Progress, Tower};
use crate::vit::{AttnSetup, Block, Ffn, Linear, Norm, NormKind, WeightLoader};

const NO_DEFAULTS: Defaults = Defaults {
    merge: 1,
    token_limits: None,
};

pub const QWEN2A: Projector = Projector {
    name: "qwen2a",
    input: Input::AudioMel {
        tokens: |_, n_frames| conv_frames(n_frames) / 2,
    },
    framing: Framing::wrap("<|audio_bos|>", "<|audio_eos|>"),
    non_causal: false,
    defaults: NO_DEFAULTS,
    build: build_qwen2a,
};

pub const VOXTRAL: Projector = Projector {
    name: "voxtral",
    input: Input::AudioMel {
        tokens: |hp, n_frames| conv_frames(n_frames).div_ceil(hp.stack_factor.max(1)),
    },
    // llama.cpp puts [BEGIN_AUDIO] before the audio and nothing after it.
    framing: Framing::wrap("[BEGIN_AUDIO]", ""),
    non_causal: false,
    defaults: NO_DEFAULTS,
    build: build_voxtral,
};

/// Frames left after the stride-2 convolution (kernel 3, padding 1).
fn conv_frames(n_frames: usize) -> usize {
    n_frames.div_ceil(2)
}

enum Head {
    /// Qwen2-Audio: pool frame pairs, final norm, then `fc`.
    PoolLinear(Linear),
    /// Voxtral: final norm, stack `factor` frames, then the MLP.
    StackMlp { factor: usize, mlp: Box<Ffn> },
}

pub struct Whisper {
    n_head: usize,
    n_embd: usize,
    n_mel: usize,
    conv1: (Tensor, Vec<f32>),
    conv2: (Tensor, Vec<f32>),
    /// `[n_ctx, d]` learned positions.
    pos_embd: Vec<f32>,
    tower: Tower,
    post_ln: Option<Norm>,
    head: Head,
}

fn build_qwen2a(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let head = Head::PoolLinear(Linear::load_to_any_width(wl, "mm.a.fc", hp.n_embd)?);
    Ok(Box::new(Whisper::load(wl, hp, head)?))
}

fn build_voxtral(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let factor = hp.stack_factor.max(1);
    let up = Linear::load_to_any_width(wl, "mm.a.mlp.1", hp.n_embd * factor)?;
    let n_out = up.n_out();
    let head = Head::StackMlp {
        factor,
        mlp: Box::new(Ffn {
            up,
            gate: None,
            down: Linear::load_to_any_width(wl, "mm.a.mlp.2", n_out)?,
            act: FfnAct::GeluErf,
        }),
    };
    Ok(Box::new(Whisper::load(wl, hp, head)?))
}

/// A conv weight `[out, in, 3]` and its bias (stored `[out, 1]` by the converter).
fn conv(
    wl: &WeightLoader,
    name: &str,
    c_in: usize,
    c_out: usize,
) -> Result<(Tensor, Vec<f32>), ClipError> {
    let w = wl.tensor_shaped(&format!("{name}.weight"), &[c_out, c_in, 3])?;
    let b_name = format!("{name}.bias");
    let b = wl.tensor(&b_name)?;
    if b.shape().iter().product::<usize>() != c_out {
        return Err(ClipError::TensorShape {
            name: b_name,
            actual: b.shape().to_vec(),
            expected: vec![c_out, 1],
        });
    }
    Ok((w, b.to_f32_vec()?))
}

impl Whisper {
    fn load(wl: &WeightLoader, hp: &EncoderHparams, head: Head) -> Result<Self, ClipError> {
        let d = hp.n_embd;
        let pos = wl.tensor("a.position_embd.weight")?;
        if pos.shape().len() != 2 || pos.shape()[1] != d {
            return Err(ClipError::TensorShape {
                name: "a.position_embd.weight".into(),
                actual: pos.shape().to_vec(),
                expected: vec![1500, d],
            });
        }
        let blocks = (0..hp.n_layer)
            .map(|il| {
                Block::load_named(
                    wl,
                    &format!("a.blk.{il}"),
                    d,
                    NormKind::Layer,
                    hp.eps,
                    FfnAct::GeluErf,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            n_head: hp.n_head,
            n_embd: d,
            n_mel: hp.n_mel_bins,
            conv1: conv(wl, "a.conv1d.1", hp.n_mel_bins, d)?,
            conv2: conv(wl, "a.conv1d.2", d, d)?,
            pos_embd: pos.to_f32_vec()?,
            tower: Tower::new(blocks),
            post_ln: Norm::opt_load(wl, "a.post_ln", d, NormKind::Layer, hp.eps)?,
            head,
        })
    }

    /// One conv layer with exact GELU: `[c_in, len]` channel-major in, `[c_out, len_out]` out
    /// (and `len_out`). The input is rounded to f16 first, as ggml's im2col does for an f16
    /// kernel.
    fn conv_gelu(
        &self,
        x: &[f32],
        c_in: usize,
        len: usize,
        (w, b): &(Tensor, Vec<f32>),
        stride: usize,
    ) -> Result<(Vec<f32>, usize), ClipError> {
        let rounded: Vec<f32>;
        let input = if w.dtype() == tensor::DType::F16 {
            rounded = x.iter().map(|&v| f16::from_f32(v).to_f32()).collect();
            &rounded
        } else {
            x
        };
        let len_out = (len + 2 - 3) / stride + 1;
        let c_out = w.shape()[0];
        let mut tokens = vec![0f32; len_out * c_out];
        cpu::conv::conv1d_tokens(
            input,
            [c_in, len],
            w,
            &tensor::ops::conv::Conv1dParams::new(stride, 1),
            &mut tokens,
        )?;
        cpu::add_rows(&mut tokens, b);
        cpu::gelu_erf(&mut tokens);
        let mut out = vec![0f32; tokens.len()];
        cpu::transpose(&tokens, len_out, c_out, &mut out);
        Ok((out, len_out))
    }
}

impl Encoder for Whisper {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        self.tower.offload(exec)
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        match &self.head {
            Head::PoolLinear(fc) => fc.n_out(),
            Head::StackMlp { mlp, .. } => mlp.down.n_out(),
        }
    }

    /// `input` is one log-mel window `[n_mel, n_frames]` (`height` = mel bins).
    fn encode(
        &self,
        input: &[f32],
        width: usize,
        height: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        let d = self.n_embd;
        if height != self.n_mel || width < 3 || input.len() != width * height {
            return Err(ClipError::BadImage(format!(
                "audio encoder needs a [{}, n_frames] log-mel window, got {} values for {height}x{width}",
                self.n_mel,
                input.len()
            )));
        }
        let (h1, len1) = self.conv_gelu(input, self.n_mel, width, &self.conv1, 1)?;
        let (h2, n) = self.conv_gelu(&h1, d, len1, &self.conv2, 2)?;
        if n * d > self.pos_embd.len() {
            return Err(ClipError::BadImage(format!(
                "{width} frames give {n} positions, the encoder has {}",
                self.pos_embd.len() / d
            )));
        }
        let mut x = vec![0f32; n * d];
        cpu::transpose(&h2, d, n, &mut x);
        cpu::add(&mut x, &self.pos_embd[..n * d]);
        let setup = AttnSetup {
            n_head: self.n_head,
            rope: None,
            windows: None,
        };
        self.tower.run_all(&mut x, n, &setup, progress)?;
        let (data, n_tokens) = match &self.head {
            Head::PoolLinear(fc) => {
                let pooled_n = n / 2;
                let mut pooled = vec![0f32; pooled_n * d];
                for (t, out) in pooled.chunks_exact_mut(d).enumerate() {
                    let (a, b) = (&x[2 * t * d..][..d], &x[(2 * t + 1) * d..][..d]);
                    for k in 0..d {
                        out[k] = (a[k] + b[k]) * 0.5;
                    }
                }
                if let Some(ln) = &self.post_ln {
                    pooled = ln.forward(&pooled);
                }
                (fc.forward(&pooled, pooled_n)?, pooled_n)
            }
            Head::StackMlp { factor, mlp } => {
                if let Some(ln) = &self.post_ln {
                    x = ln.forward(&x);
                }
                // Consecutive frames side by side; a short last group is zero-padded.
                let rows = n.div_ceil(*factor);
                x.resize(rows * factor * d, 0.0);
                (mlp.forward(&x, rows)?, rows)
            }
        };
        Ok(Embeddings {
            n_tokens,
            nx: n_tokens,
            ny: 1,
            data,
        })
    }
}
