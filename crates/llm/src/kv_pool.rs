//! A budget of KV cells shared by several caches (the server's slots).
//!
//! Each cache still keeps its rows in its own per-layer stores (host memory grows as rows
//! are written), but the cells it may hold are leased from the pool in pages of
//! [`KV_PAGE`] cells: a cache takes pages as its sequence grows and gives them back when
//! it is cleared or releases what it no longer uses. The sum over all caches never passes
//! the pool's capacity, so `--parallel 16` can serve sixteen requests with a KV memory
//! bound of a few contexts, and one long conversation can use what idle slots are not
//! using.

use std::sync::Mutex;

/// Cells leased at a time (a cache's lease is a whole number of pages, except at its
/// context size or when the pool's last cells are fewer than a page).
pub const KV_PAGE: usize = 256;

#[derive(Debug)]
pub struct KvPool {
    capacity: usize,
    used: Mutex<usize>,
}

impl KvPool {
    /// A pool of `capacity` cells.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            used: Mutex::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Cells leased to caches.
    pub fn used(&self) -> usize {
        *self.lock()
    }

    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.used())
    }

    /// Leases between `min` and `want` cells (as many as are free); `None` when fewer than
    /// `min` are free.
    pub(crate) fn take(&self, min: usize, want: usize) -> Option<usize> {
        let mut used = self.lock();
        let free = self.capacity.saturating_sub(*used);
        if free < min {
            return None;
        }
        let n = want.max(min).min(free);
        *used += n;
        Some(n)
    }

    pub(crate) fn give_back(&self, n: usize) {
        let mut used = self.lock();
        *used = used.saturating_sub(n);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        // The guarded value is a plain counter, consistent after any panic.
        self.used.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_stay_within_capacity() {
        let pool = KvPool::new(600);
        assert_eq!(pool.take(1, 256), Some(256));
        assert_eq!(pool.take(1, 256), Some(256));
        // Only 88 left: a partial page when the minimum fits.
        assert_eq!(pool.take(100, 256), None);
        assert_eq!(pool.take(50, 256), Some(88));
        assert_eq!(pool.free(), 0);
        pool.give_back(256);
        assert_eq!((pool.used(), pool.free()), (344, 256));
    }
}
