//! Decoder layers on a GPU, counted as llama.cpp's `-ngl` counts them: the last
//! `n_gpu_layers` repeating layers go to the GPU, and a count above the number of layers
//! also moves the output head (final norm + LM head). The token embedding stays in host
//! memory: a lookup reads a few rows, so only those rows are uploaded per batch.

use std::sync::Arc;

use tensor::Tensor;
use tensor::exec::{Exec, GpuExec};
use tensor::gpu::GpuContext;

use crate::decoder::Decoder;
use crate::error::Result;
use crate::weights::LayerWeights;

pub(crate) struct Offload {
    pub exec: GpuExec,
    pub first_layer: usize,
    pub layers: Vec<LayerWeights<Tensor>>,
    pub head: Option<Head>,
}

pub(crate) struct Head {
    pub norm: Tensor,
    pub output: Tensor,
}

/// Where a decoder runs, for display (`mtmd bench`, `/props`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Repeating layers on the GPU, out of `n_layer`.
    pub gpu_layers: usize,
    pub n_layer: usize,
    pub output_on_gpu: bool,
    /// The GPU adapter's name, when any layer runs there.
    pub adapter: Option<String>,
    /// Bytes of weights uploaded to the GPU.
    pub gpu_weight_bytes: u64,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.adapter {
            None => write!(f, "cpu"),
            Some(name) => write!(
                f,
                "gpu ({name}): {}/{} layers{}",
                self.gpu_layers,
                self.n_layer,
                if self.output_on_gpu { " + output" } else { "" }
            ),
        }
    }
}

fn tensor_bytes(t: &Tensor) -> u64 {
    let per_row = t
        .dtype()
        .row_bytes(*t.shape().last().unwrap_or(&0) as u64)
        .unwrap_or(0);
    per_row * (t.numel() / t.shape().last().copied().unwrap_or(1).max(1)) as u64
}

impl Decoder {
    /// Moves the last `n_gpu_layers` layers (and, above `n_layer`, the output head) to the
    /// GPU: their weights are uploaded once, quantized blocks as stored. 0 keeps everything
    /// on the CPU. Caches made afterwards ([`Decoder::new_cache`]) keep those layers' K/V
    /// in GPU memory.
    pub fn offload(&mut self, ctx: Arc<GpuContext>, n_gpu_layers: usize) -> Result<()> {
        let n_layer = self.hp.n_layer;
        let on_gpu = n_gpu_layers.min(n_layer);
        if n_gpu_layers == 0 {
            self.offload = None;
            return Ok(());
        }
        let exec = GpuExec::new(ctx);
        let first_layer = n_layer - on_gpu;
        let mut layers = Vec::with_capacity(on_gpu);
        for lw in &self.w.layers[first_layer..] {
            layers.push(lw.map(|m| exec.weight(m), |v| exec.vector(v))?);
        }
        let head = if n_gpu_layers > n_layer {
            Some(Head {
                norm: exec.vector(&self.w.output_norm)?,
                output: exec.weight(&self.w.output)?,
            })
        } else {
            None
        };
        self.offload = Some(Offload {
            exec,
            first_layer,
            layers,
            head,
        });
        Ok(())
    }

    /// Where this decoder's layers run.
    pub fn placement(&self) -> Placement {
        let n_layer = self.hp.n_layer;
        match &self.offload {
            None => Placement {
                gpu_layers: 0,
                n_layer,
                output_on_gpu: false,
                adapter: None,
                gpu_weight_bytes: 0,
            },
            Some(o) => {
                let mut bytes = 0u64;
                for lw in &o.layers {
                    for m in [
                        &lw.wq,
                        &lw.wk,
                        &lw.wv,
                        &lw.wo,
                        &lw.ffn_gate,
                        &lw.ffn_up,
                        &lw.ffn_down,
                    ] {
                        bytes += tensor_bytes(m);
                    }
                }
                if let Some(h) = &o.head {
                    bytes += tensor_bytes(&h.output);
                }
                Placement {
                    gpu_layers: o.layers.len(),
                    n_layer,
                    output_on_gpu: o.head.is_some(),
                    adapter: Some(o.exec.context().adapter_name().to_string()),
                    gpu_weight_bytes: bytes,
                }
            }
        }
    }
}
