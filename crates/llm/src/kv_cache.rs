//! The KV cache: per layer, K and V rows of every context cell, plus each cell's position.

use crate::error::{LlmError, Result};
use half::f16;
use tensor::ops::attention::KvData;

/// Storage type of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    F32,
    /// llama.cpp's default: half the memory, rounding to nearest.
    #[default]
    F16,
}

impl std::str::FromStr for KvType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            _ => Err(format!("unknown KV cache type '{s}' (f32 or f16)")),
        }
    }
}

enum Rows {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

impl Rows {
    fn new(kind: KvType, len: usize) -> Self {
        match kind {
            KvType::F32 => Rows::F32(vec![0.0; len]),
            KvType::F16 => Rows::F16(vec![f16::ZERO; len]),
        }
    }

    fn write(&mut self, at: usize, values: &[f32]) {
        match self {
            Rows::F32(d) => d[at..at + values.len()].copy_from_slice(values),
            Rows::F16(d) => {
                for (o, &v) in d[at..at + values.len()].iter_mut().zip(values) {
                    *o = f16::from_f32(v);
                }
            }
        }
    }

    fn view(&self, len: usize) -> KvData<'_> {
        match self {
            Rows::F32(d) => KvData::F32(&d[..len]),
            Rows::F16(d) => KvData::F16(&d[..len]),
        }
    }
}

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
    k: Vec<Rows>,
    v: Vec<Rows>,
    cells: Vec<CellPos>,
    next_group: u32,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, kv_dim: usize, kind: KvType) -> Self {
        let len = n_ctx * kv_dim;
        Self {
            n_ctx,
            kv_dim,
            k: (0..n_layer).map(|_| Rows::new(kind, len)).collect(),
            v: (0..n_layer).map(|_| Rows::new(kind, len)).collect(),
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

    /// Stores K and V rows (`[n, kv_dim]`) of layer `il` for cells `first..first+n`.
    pub(crate) fn store(&mut self, il: usize, first: usize, k: &[f32], v: &[f32]) {
        self.k[il].write(first * self.kv_dim, k);
        self.v[il].write(first * self.kv_dim, v);
    }

    /// K and V of layer `il` over the first `n_kv` cells.
    pub(crate) fn view(&self, il: usize, n_kv: usize) -> (KvData<'_>, KvData<'_>) {
        let len = n_kv * self.kv_dim;
        (self.k[il].view(len), self.v[il].view(len))
    }

    /// Bytes held by keys and values.
    pub fn size_bytes(&self) -> usize {
        let per = |r: &Rows| match r {
            Rows::F32(d) => d.len() * 4,
            Rows::F16(d) => d.len() * 2,
        };
        self.k.iter().chain(&self.v).map(per).sum()
    }
}
