//! The transformer blocks of an encoder, run on the CPU or, once offloaded, on a GPU where the
//! activations stay between blocks (one upload before the first block of a run, one download
//! after the last). Stems, poolings and projectors around the tower stay on the CPU: they
//! are a small share of an encode.

use std::ops::Range;

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

    /// Runs blocks `layers` in place on `x` `[n, n_embd]`; `setup(il)` says how layer `il`
    /// attends. `progress(il + 1, len)` follows each block (on a GPU: once its work is
    /// queued, which runs ahead of the device by at most a block or two).
    pub fn run<'s>(
        &self,
        x: &mut Vec<f32>,
        n: usize,
        layers: Range<usize>,
        setup: &dyn Fn(usize) -> AttnSetup<'s>,
        progress: Progress<'_>,
    ) -> Result<(), ClipError> {
        let total = self.len();
        #[cfg(feature = "gpu")]
        if let Some(g) = &self.gpu {
            use tensor::exec::Exec;
            let mut on_gpu = g.exec.upload(x)?;
            for il in layers {
                g.blocks[il].forward_on(&g.exec, &mut on_gpu, n, &setup(il))?;
                progress(il + 1, total);
            }
            *x = g.exec.download(on_gpu)?;
            return Ok(());
        }
        for il in layers {
            self.blocks[il].forward(x, n, &setup(il))?;
            progress(il + 1, total);
        }
        Ok(())
    }

    /// Runs every block with the same setup.
    pub fn run_all(
        &self,
        x: &mut Vec<f32>,
        n: usize,
        setup: &AttnSetup,
        progress: Progress<'_>,
    ) -> Result<(), ClipError> {
        self.run(x, n, 0..self.len(), &|_| *setup, progress)
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

#[cfg(feature = "gpu")]
fn upload_block(
    exec: &tensor::exec::GpuExec,
    b: &Block,
) -> Result<Block<tensor::Tensor>, ClipError> {
    use crate::vit::{Ffn, Linear, Norm, Qkv};
    use tensor::exec::Exec;
    let vector = |v: &[f32]| exec.vector(v);
    let linear = |l: &Linear| -> Result<Linear<tensor::Tensor>, ClipError> {
        Ok(Linear {
            w: exec.weight(&l.w)?,
            b: l.b.as_deref().map(vector).transpose()?,
        })
    };
    let norm = |n: &Norm| -> Result<Norm<tensor::Tensor>, ClipError> {
        Ok(Norm {
            kind: n.kind,
            w: vector(&n.w)?,
            b: n.b.as_deref().map(vector).transpose()?,
            eps: n.eps,
        })
    };
    Ok(Block {
        ln1: norm(&b.ln1)?,
        qkv: match &b.qkv {
            Qkv::Separate(w) => {
                Qkv::Separate(Box::new([linear(&w[0])?, linear(&w[1])?, linear(&w[2])?]))
            }
            Qkv::Fused(w) => Qkv::Fused(linear(w)?),
        },
        out: linear(&b.out)?,
        ln2: norm(&b.ln2)?,
        ffn: Ffn {
            up: linear(&b.ffn.up)?,
            gate: b.ffn.gate.as_ref().map(linear).transpose()?,
            down: linear(&b.ffn.down)?,
            act: b.ffn.act,
        },
    })
}
