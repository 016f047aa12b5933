//! The one place in this crate that touches `unsafe`: memory-mapping a file.
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;

/// Whole-file bytes: a read-only memory map, or an owned buffer (tests, files built in memory).
enum Backing {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// A cheap, clonable handle on a range of a file's bytes. Tensors borrow their data this way,
/// so weights are used in place and the mapping lives as long as any tensor needs it.
#[derive(Clone)]
pub struct MappedBytes {
    backing: Arc<Backing>,
    range: Range<usize>,
}

impl MappedBytes {
    /// Maps `path` read-only.
    pub fn map_file(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        // SAFETY: the map is read-only. Like every mmap-based model loader (llama.cpp
        // included) we rely on the file not being truncated while it is in use; a
        // truncation by another process would fault, not corrupt memory we write.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let len = map.len();
        Ok(Self {
            backing: Arc::new(Backing::Map(map)),
            range: 0..len,
        })
    }

    /// Wraps bytes already in memory.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Self {
            backing: Arc::new(Backing::Owned(bytes)),
            range: 0..len,
        }
    }

    /// A sub-range, relative to this handle. `None` if it does not fit.
    pub fn slice(&self, range: Range<usize>) -> Option<Self> {
        if range.start > range.end || range.end > self.range.len() {
            return None;
        }
        Some(Self {
            backing: Arc::clone(&self.backing),
            range: self.range.start + range.start..self.range.start + range.end,
        })
    }

    /// True when the bytes come from a memory map (not copied into the heap).
    pub fn is_mapped(&self) -> bool {
        matches!(*self.backing, Backing::Map(_))
    }
}

impl Deref for MappedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &*self.backing {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        };
        &all[self.range.clone()]
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedBytes")
            .field("mapped", &self.is_mapped())
            .field("range", &self.range)
            .finish()
    }
}
