//! The KV cache: per layer, K and V rows of every context cell, plus each cell's position.

use std::sync::Arc;

use crate::error::{LlmError, Result};
use crate::kv_pool::{KV_PAGE, KvPool};
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
    /// The shared budget this cache leases its cells from (`None`: `n_ctx` cells of its own).
    pool: Option<Arc<KvPool>>,
    /// Cells leased from `pool`.
    leased: usize,
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
            cells: Vec::new(),
            next_group: 1,
            pool: None,
            leased: 0,
        }
    }

    /// Leases this cache's cells from `pool` from now on (the cells it holds are leased at
    /// once, which fails when the pool lacks them).
    pub fn attach_pool(&mut self, pool: Arc<KvPool>) -> Result<()> {
        self.detach_pool();
        self.pool = Some(pool);
        self.reserve(0)
    }

    fn detach_pool(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.give_back(self.leased);
        }
        self.leased = 0;
    }

    /// Cells this cache may fill before it needs more from its pool.
    pub fn leased(&self) -> usize {
        if self.pool.is_some() {
            self.leased
        } else {
            self.n_ctx
        }
    }

    /// Makes sure `extra` more cells can be pushed: leases pages from the pool as needed
    /// (whole pages while they are free, at least what is needed).
    pub fn reserve(&mut self, extra: usize) -> Result<()> {
        let needed = self.cells.len() + extra;
        if needed > self.n_ctx {
            return Err(LlmError::ContextFull {
                needed,
                n_ctx: self.n_ctx,
            });
        }
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        if needed <= self.leased {
            return Ok(());
        }
        let min = needed - self.leased;
        let want = needed.div_ceil(KV_PAGE) * KV_PAGE;
        let want = want.min(self.n_ctx) - self.leased;
        match pool.take(min, want) {
            Some(n) => {
                self.leased += n;
                Ok(())
            }
            None => Err(LlmError::KvPoolFull {
                needed: min,
                free: pool.free(),
                capacity: pool.capacity(),
            }),
        }
    }

    /// Gives back leased pages beyond those the cells in use need; an empty cache also
    /// frees the memory of its host rows (a kept conversation keeps its rows: shrinking
    /// them would copy the whole cache).
    pub fn release_unused(&mut self) {
        let keep = self.cells.len().div_ceil(KV_PAGE) * KV_PAGE;
        if let Some(pool) = &self.pool
            && self.leased > keep
        {
            pool.give_back(self.leased - keep);
            self.leased = keep;
        }
        if self.cells.is_empty() {
            for store in self.k.iter_mut().chain(&mut self.v) {
                store.shrink_to(0);
            }
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

    /// Takes cells for a batch, failing when the context (or the shared pool) is full.
    pub(crate) fn push_cells(&mut self, cells: Vec<CellPos>) -> Result<()> {
        self.reserve(cells.len())?;
        self.cells.extend(cells);
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

    /// [`KvCache::store`] of keys not yet roped: the rope is applied as they are written
    /// ([`Exec::rope_kv_write`]); the key rows are left unspecified.
    pub(crate) fn store_roped<E: Exec>(
        &mut self,
        e: &E,
        il: usize,
        first: usize,
        k: RopedKeys<'_, E::Act>,
        v: &E::Act,
    ) -> Result<()> {
        let n = k.pos.len() / k.rope.mode.positions_per_token();
        e.rope_kv_write(
            &mut self.k[il],
            first,
            k.rows,
            n,
            k.heads,
            k.head_dim,
            k.pos,
            k.rope,
        )?;
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

/// Key rows `[n, heads, head_dim]` still to be roped at `pos` with `rope`.
pub(crate) struct RopedKeys<'a, A> {
    pub rows: &'a mut A,
    pub heads: usize,
    pub head_dim: usize,
    pub pos: &'a [i32],
    pub rope: &'a tensor::ops::rope::RopeConfig,
}

impl Drop for KvCache {
    fn drop(&mut self) {
        self.detach_pool();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells(n: usize) -> Vec<CellPos> {
        (0..n as i32)
            .map(|t| CellPos {
                t,
                y: 0,
                x: 0,
                group: 0,
            })
            .collect()
    }

    #[test]
    fn caches_lease_pages_from_a_shared_pool_and_give_them_back() {
        let pool = Arc::new(KvPool::new(3 * KV_PAGE));
        let mut a = KvCache::new(1, 4 * KV_PAGE, 8, KvType::F32);
        let mut b = KvCache::new(1, 4 * KV_PAGE, 8, KvType::F32);
        a.attach_pool(pool.clone()).unwrap();
        b.attach_pool(pool.clone()).unwrap();
        a.push_cells(cells(10)).unwrap();
        assert_eq!((a.leased(), pool.used()), (KV_PAGE, KV_PAGE));
        a.push_cells(cells(KV_PAGE)).unwrap();
        b.push_cells(cells(KV_PAGE - 20)).unwrap();
        assert_eq!(pool.free(), 0);
        // a's second page has room; b's first page is full after 20 more.
        a.push_cells(cells(5)).unwrap();
        let err = b.push_cells(cells(21)).unwrap_err();
        assert!(
            matches!(
                err,
                LlmError::KvPoolFull {
                    needed: 1,
                    free: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(b.len(), KV_PAGE - 20, "a refused batch leaves no cells");
        // a is cleared: its pages go back and b can grow.
        a.clear();
        a.release_unused();
        assert_eq!((a.leased(), pool.free()), (0, 2 * KV_PAGE));
        b.push_cells(cells(21)).unwrap();
        drop(b);
        assert_eq!(pool.used(), 0, "a dropped cache returns its lease");
    }

    #[test]
    fn the_context_size_still_bounds_one_cache() {
        let pool = Arc::new(KvPool::new(10 * KV_PAGE));
        let mut a = KvCache::new(1, 300, 4, KvType::F16);
        a.attach_pool(pool.clone()).unwrap();
        a.push_cells(cells(290)).unwrap();
        assert_eq!(a.leased(), 300, "the lease stops at the context size");
        assert!(matches!(
            a.push_cells(cells(11)),
            Err(LlmError::ContextFull {
                needed: 301,
                n_ctx: 300
            })
        ));
    }
}
