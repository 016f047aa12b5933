//! The transformer blocks of an encoder, on the CPU or, once offloaded, on a GPU. Encoders write
//! their whole encode over [`Exec`] and run the blocks with [`run_blocks`] on the CPU blocks or
//! on [`Tower::gpu`]'s, so an offloaded encode stays on the device from stem to projector.

use std::ops::Range;

use tensor::exec::Exec;

use crate::ClipError;
use crate::vit::{AttnSetup, Block};

/// Called after each block of a run with (blocks done, blocks in the tower): an encode of a
/// large image takes tens of seconds, and front ends show how far it got.
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Sync);

pub struct Tower {
    pub blocks: Vec<Block>,
    #[cfg(feature = "gpu")]
    gpu: Option<GpuTower>,
}

#[cfg(feature = "gpu")]
struct GpuTower {
    exec: tensor::exec::GpuExec,
    blocks: Vec<Block<tensor::Tensor>>,
}

impl Tower {
    pub fn new(blocks: Vec<Block>) -> Self {
        Self {
            blocks,
            #[cfg(feature = "gpu")]
            gpu: None,
        }
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The GPU backend and the blocks' weights there, once offloaded.
    #[cfg(feature = "gpu")]
    pub fn gpu(&self) -> Option<(&tensor::exec::GpuExec, &[Block<tensor::Tensor>])> {
        self.gpu.as_ref().map(|g| (&g.exec, &g.blocks[..]))
    }

    /// Uploads every block's weights to the GPU of `exec` (quantized blocks as stored); later
    /// runs execute there.
    #[cfg(feature = "gpu")]
    pub fn offload(&mut self, exec: &tensor::exec::GpuExec) -> Result<(), ClipError> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| upload_block(exec, b))
            .collect::<Result<_, _>>()?;
        self.gpu = Some(GpuTower {
            exec: exec.clone(),
            blocks,
        });
        Ok(())
    }

    /// Whether the blocks run on a GPU.
    pub fn on_gpu(&self) -> bool {
        #[cfg(feature = "gpu")]
        {
            self.gpu.is_some()
        }
        #[cfg(not(feature = "gpu"))]
        {
            false
        }
    }
}

/// Runs `blocks[layers]` in place on `x` `[n, n_embd]` on backend `e` (activations stay on
/// it); `progress(il + 1, blocks.len())` follows each block.
pub fn run_blocks<'s, E: Exec>(
    e: &E,
    blocks: &[Block<E::Vector>],
    x: &mut E::Act,
    n: usize,
    layers: Range<usize>,
    setup: &dyn Fn(usize) -> AttnSetup<'s>,
    progress: Progress<'_>,
) -> Result<(), ClipError> {
    for il in layers {
        blocks[il].forward_on(e, x, n, &setup(il))?;
        progress(il + 1, blocks.len());
    }
    Ok(())
}

#[cfg(feature = "gpu")]
fn upload_block(
    exec: &tensor::exec::GpuExec,
    b: &Block,
) -> Result<Block<tensor::Tensor>, ClipError> {
    use crate::vit::{Linear, Qkv};
    Ok(Block {
        ln1: b.ln1.to_gpu(exec)?,
        qkv: match &b.qkv {
            Qkv::Separate(w) => Qkv::Separate(Box::new([
                w[0].to_gpu(exec)?,
                w[1].to_gpu(exec)?,
                w[2].to_gpu(exec)?,
            ])),
            // Split into three matrices once at upload: the block then needs no host round
            // trip to cut the fused output into q, k and v.
            Qkv::Fused(w) => {
                let d = w.n_out() / 3;
                let part = |i: usize| -> Result<Linear<tensor::Tensor>, ClipError> {
                    Linear {
                        w: w.w.narrow(0, i * d, d)?,
                        b: w.b.as_ref().map(|b| b[i * d..(i + 1) * d].to_vec()),
                    }
                    .to_gpu(exec)
                };
                Qkv::Separate(Box::new([part(0)?, part(1)?, part(2)?]))
            }
        },
        out: b.out.to_gpu(exec)?,
        ln2: b.ln2.to_gpu(exec)?,
        ffn: b.ffn.to_gpu(exec)?,
    })
}
