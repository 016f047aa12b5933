//! The KV cache: per layer, K and V rows of every context cell, plus each cell's position.

use crate::error::{LlmError, Result};
pub use tensor::exec::KvType;
use tensor::exec::{Exec, KvStore};

/// Where a cell sits: its position (`t`), and for M-RoPE models its 2-D spot in an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellPos {
    pub t: i32,
    pub y: i32,
    pub x: i32,
    /// Non-zero for cells of a non-causal span (Gemma 3 image): cells of the same group see
    /// each other regardless of order.
    pub group: u32,
}

pub struct KvCache {
    n_ctx: usize,
    kv_dim: usize,
    /// Per layer; a layer's rows live where the layer runs (host or GPU memory).
    k: Vec<KvStore>,
    v: Vec<KvStore>,
    cells: Vec<CellPos>,
    next_group: u32,
}

impl KvCache {
    /// A cache with every layer in host memory.
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize, kind: KvType) -> Self {
        let len = n_ctx * kv_dim;
        let stores = |_| KvStore::host(kind, len);
        Self::with_stores(
            n_ctx,
            kv_dim,
            (0..n_layer).map(stores).collect(),
            (0..n_layer).map(stores).collect(),
        )
    }

    /// A cache over per-layer stores that the decoder allocated where each layer runs.
    pub(crate) fn with_stores(
        n_ctx: usize,
        kv_dim: usize,
        k: Vec<KvStore>,
        v: Vec<KvStore>,
    ) -> Self {
        Self {
            n_ctx,
            kv_dim,
            k,
            v,
            cells: Vec::with_capacity(n_ctx),
            next_group: 1,
        }
    }

    pub fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    /// Cells in use.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    pub fn cells(&self) -> &[CellPos] {
        &self.cells
    }

    /// Forgets every cell from `n` on (keeps a reusable prefix).
    pub fn truncate(&mut self, n: usize) {
        self.cells.truncate(n);
    }

    pub fn clear(&mut self) {
        self.cells.clear();
    }

    /// Reserves `n` cells for a batch, failing when the context is full.
    pub(crate) fn push_cells(&mut self, cells: impl IntoIterator<Item = CellPos>) -> Result<()> {
        let before = self.cells.len();
        self.cells.extend(cells);
        if self.cells.len() > self.n_ctx {
            let needed = self.cells.len();
            self.cells.truncate(before);
            return Err(LlmError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        Ok(())
    }

    pub(crate) fn new_group(&mut self) -> u32 {
        let g = self.next_group;
        self.next_group = self.next_group.wrapping_add(1).max(1);
        g
    }

    /// Stores K and V rows (`[n, kv_dim]`) of layer `il` for cells `first..`.
    pub(crate) fn store<E: Exec>(
        &mut self,
        e: &E,
        il: usize,
        first: usize,
        k: &E::Act,
        v: &E::Act,
    ) -> Result<()> {
        e.kv_write(&mut self.k[il], self.kv_dim, first, k)?;
        e.kv_write(&mut self.v[il], self.kv_dim, first, v)?;
        Ok(())
    }

    /// K and V stores of layer `il`.
    pub(crate) fn layer(&self, il: usize) -> (&KvStore, &KvStore) {
        (&self.k[il], &self.v[il])
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.kv_dim
    }

    /// Bytes held by keys and values.
    pub fn size_bytes(&self) -> usize {
        self.k.iter().chain(&self.v).map(KvStore::size_bytes).sum()
    }
}
