//! Whisper-style audio encoders: a conv1d stem (stride 1, then 2, each followed by exact GELU)
//! over a log-mel window, learned positions, a layer-norm transformer with exact-GELU FFNs, and
//! the projector of each family:
//! - `qwen2a` (Qwen2-Audio): average pooling of frame pairs before the final norm, one linear;
//! - `voxtral`: four consecutive frames stacked into one row, then a GELU MLP.

use tensor::Tensor;
use tensor::cpu::Conv2dParams;
use tensor::exec::{Exec, Unary};

use crate::ClipError;
use crate::hparams::{EncoderHparams, FfnAct};
use crate::models::{Embeddings, Encoder, TowerOn, on_backend};
use crate::projector::{Defaults, Framing, Input, Projector};
use crate::tower::{Progress, Tower, run_blocks};
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

enum Projection<V> {
    /// Qwen2-Audio: pool frame pairs, final norm, then `fc`.
    PoolLinear(Linear<V>),
    /// Voxtral: final norm, stack `factor` frames, then the MLP.
    StackMlp { factor: usize, mlp: Box<Ffn<V>> },
}

/// A convolution of the stem as a matrix `[c_out, c_in·3]` over im2col rows, its bias, and
/// whether its input is rounded to f16 first (ggml's im2col does that for an f16 kernel).
struct Conv<V> {
    w: Tensor,
    b: V,
    f16_input: bool,
}

/// Everything around the tower, on one backend (`V` its vectors, `A` its activations).
struct Head<V, A> {
    conv1: Conv<V>,
    conv2: Conv<V>,
    /// `[n_ctx, d]` learned positions.
    pos_embd: A,
    n_ctx: usize,
    post_ln: Option<Norm<V>>,
    projection: Projection<V>,
}

pub struct Whisper {
    n_head: usize,
    n_embd: usize,
    n_mel: usize,
    tower: Tower,
    head: Head<Vec<f32>, Vec<f32>>,
    /// The same weights on the GPU, once offloaded: the whole encode runs there.
    #[cfg(feature = "gpu")]
    gpu_head: Option<Head<Tensor, Tensor>>,
}

fn build_qwen2a(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let head = Projection::PoolLinear(Linear::load_to_any_width(wl, "mm.a.fc", hp.n_embd)?);
    Ok(Box::new(Whisper::load(wl, hp, head)?))
}

fn build_voxtral(wl: &WeightLoader, hp: &EncoderHparams) -> Result<Box<dyn Encoder>, ClipError> {
    let factor = hp.stack_factor.max(1);
    let up = Linear::load_to_any_width(wl, "mm.a.mlp.1", hp.n_embd * factor)?;
    let n_out = up.n_out();
    let head = Projection::StackMlp {
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
) -> Result<Conv<Vec<f32>>, ClipError> {
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
    Ok(Conv {
        f16_input: w.dtype() == tensor::DType::F16,
        w: w.contiguous()?.reshape(&[c_out, c_in * 3])?,
        b: b.to_f32_vec()?,
    })
}

#[cfg(feature = "gpu")]
impl Conv<Vec<f32>> {
    fn to_gpu(&self, exec: &tensor::exec::GpuExec) -> Result<Conv<Tensor>, ClipError> {
        Ok(Conv {
            w: exec.weight(&self.w)?,
            b: exec.vector(&self.b)?,
            f16_input: self.f16_input,
        })
    }
}

impl<V> Conv<V> {
    /// The convolution (kernel 3, padding 1) with exact GELU of a channel-major `[c_in, len]`
    /// input: token-major `[len_out, c_out]` out, and `len_out`.
    fn forward_on<E: Exec<Vector = V>>(
        &self,
        e: &E,
        mut x: E::Act,
        c_in: usize,
        len: usize,
        stride: usize,
    ) -> Result<(E::Act, usize), ClipError> {
        if self.f16_input {
            e.round_f16(&mut x)?;
        }
        let p = Conv2dParams {
            stride: [1, stride],
            padding: [0, 1],
            dilation: [1, 1],
        };
        let cols = e.im2col(&x, [c_in, 1, len], [1, 3], &p)?;
        drop(x);
        let len_out = (len + 2 - 3) / stride + 1;
        let mut out = e.alloc(len_out * self.w.shape()[0])?;
        e.matmul_wide(&self.w, &cols, len_out, &mut out)?;
        e.add_rows(&mut out, &self.b)?;
        e.unary(Unary::GeluErf, &mut out)?;
        Ok((out, len_out))
    }
}

impl Whisper {
    fn load(
        wl: &WeightLoader,
        hp: &EncoderHparams,
        projection: Projection<Vec<f32>>,
    ) -> Result<Self, ClipError> {
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
            tower: Tower::new(blocks),
            head: Head {
                conv1: conv(wl, "a.conv1d.1", hp.n_mel_bins, d)?,
                conv2: conv(wl, "a.conv1d.2", d, d)?,
                n_ctx: pos.shape()[0],
                pos_embd: pos.to_f32_vec()?,
                post_ln: Norm::opt_load(wl, "a.post_ln", d, NormKind::Layer, hp.eps)?,
                projection,
            },
            #[cfg(feature = "gpu")]
            gpu_head: None,
        })
    }

    /// The whole encode of one log-mel window on one backend; the embeddings are its one
    /// read-back.
    fn encode_on<E: Exec>(
        &self,
        tower: &TowerOn<'_, E>,
        head: &Head<E::Vector, E::Act>,
        input: &[f32],
        width: usize,
        progress: Progress<'_>,
    ) -> Result<Embeddings, ClipError> {
        let e = tower.e;
        let d = self.n_embd;
        let (h1, len1) = head
            .conv1
            .forward_on(e, e.upload(input)?, self.n_mel, width, 1)?;
        let h1 = e.transpose(&h1, len1, d)?;
        let (mut x, n) = head.conv2.forward_on(e, h1, d, len1, 2)?;
        if n > head.n_ctx {
            return Err(ClipError::BadImage(format!(
                "{width} frames give {n} positions, the encoder has {}",
                head.n_ctx
            )));
        }
        if n == head.n_ctx {
            e.add(&mut x, &head.pos_embd)?;
        } else {
            let rows: Vec<usize> = (0..n).collect();
            e.add(&mut x, &e.gather_rows(&head.pos_embd, d, &rows)?)?;
        }
        let setup = AttnSetup {
            n_head: self.n_head,
            rope: None,
            windows: None,
        };
        run_blocks(
            e,
            tower.blocks,
            &mut x,
            n,
            0..tower.blocks.len(),
            &|_| setup,
            progress,
        )?;
        let norm = |x: E::Act| Norm::opt_apply_on(head.post_ln.as_ref(), e, x, d);
        let (data, n_tokens) = match &head.projection {
            Projection::PoolLinear(fc) => {
                let pooled_n = n / 2;
                if n % 2 == 1 {
                    // The last frame has no partner.
                    let rows: Vec<usize> = (0..2 * pooled_n).collect();
                    x = e.gather_rows(&x, d, &rows)?;
                }
                let pooled = e.pool_avg_grid(&x, [2 * pooled_n, 1, d], [2, 1])?;
                drop(x);
                let pooled = norm(pooled)?;
                (fc.forward_on(e, &pooled, pooled_n)?, pooled_n)
            }
            Projection::StackMlp { factor, mlp } => {
                let mut x = norm(x)?;
                // Consecutive frames side by side; a short last group is zero-padded.
                let rows = n.div_ceil(*factor);
                if rows * factor > n {
                    let mut padded = e.upload(&vec![0.0; rows * factor * d])?;
                    e.copy_rows(&mut padded, d, 0, &x)?;
                    x = padded;
                }
                (mlp.forward_on(e, &x, rows)?, rows)
            }
        };
        Ok(Embeddings {
            n_tokens,
            nx: n_tokens,
            ny: 1,
            data: e.download(data)?,
        })
    }
}

impl Encoder for Whisper {
    #[cfg(feature = "gpu")]
    fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        let h = &self.head;
        let head = Head {
            conv1: h.conv1.to_gpu(exec)?,
            conv2: h.conv2.to_gpu(exec)?,
            pos_embd: exec.upload(&h.pos_embd)?,
            n_ctx: h.n_ctx,
            post_ln: Norm::opt_to_gpu(&h.post_ln, exec)?,
            projection: match &h.projection {
                Projection::PoolLinear(fc) => Projection::PoolLinear(fc.to_gpu(exec)?),
                Projection::StackMlp { factor, mlp } => Projection::StackMlp {
                    factor: *factor,
                    mlp: Box::new(mlp.to_gpu(exec)?),
                },
            },
        };
        self.tower.offload(exec)?;
        self.gpu_head = Some(head);
        Ok(())
    }

    fn on_gpu(&self) -> bool {
        self.tower.on_gpu()
    }

    fn n_embd_out(&self) -> usize {
        match &self.head.projection {
            Projection::PoolLinear(fc) => fc.n_out(),
            Projection::StackMlp { mlp, .. } => mlp.down.n_out(),
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
        if height != self.n_mel || width < 3 || input.len() != width * height {
            return Err(ClipError::BadImage(format!(
                "audio encoder needs a [{}, n_frames] log-mel window, got {} values for {height}x{width}",
                self.n_mel,
                input.len()
            )));
        }
        on_backend!(self, |tower, head| self
            .encode_on(tower, head, input, width, progress))
    }
}
