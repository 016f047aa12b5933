//! The one place in this crate that touches `unsafe`: memory-mapping a file.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::ops::{Deref, Range};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

/// How model files are brought into memory (process-wide, like llama.cpp's `--mmap` /
/// `--no-mmap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMode {
    /// [`LoadMode::Read`] when the file takes at most half of the memory the system reports
    /// available, else [`LoadMode::Map`]. The default.
    Auto,
    /// Map the file read-only: zero-copy, pages shared with the page cache and with other
    /// processes, a model larger than RAM still runs.
    Map,
    /// Read the file into anonymous memory backed by transparent huge pages. Costs a copy
    /// at load and makes the model private to the process, but the weights then always sit
    /// in 2 MiB pages: a memory-bound decode streams them 5–20% faster than from page-cache
    /// pages (how much depends on how the cache filled; see docs/performance.md).
    Read,
}

static MODE: AtomicU8 = AtomicU8::new(0);

/// Sets how later [`MappedBytes::map_file`] calls load files.
pub fn set_load_mode(mode: LoadMode) {
    let v = match mode {
        LoadMode::Auto => 0,
        LoadMode::Map => 1,
        LoadMode::Read => 2,
    };
    MODE.store(v, Ordering::Relaxed);
}

/// The mode [`MappedBytes::map_file`] uses.
pub fn load_mode() -> LoadMode {
    match MODE.load(Ordering::Relaxed) {
        1 => LoadMode::Map,
        2 => LoadMode::Read,
        _ => LoadMode::Auto,
    }
}

/// Bytes of memory the system reports available (Linux `MemAvailable`), if known.
fn mem_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

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
    /// Maps `path` read-only (or reads it, per [`load_mode`]).
    pub fn map_file(path: &Path) -> std::io::Result<Self> {
        Self::load_file(path, load_mode())
    }

    /// Brings `path` into memory the way `mode` says.
    pub fn load_file(path: &Path, mode: LoadMode) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let mode = match mode {
            LoadMode::Auto => {
                let len = file.metadata()?.len();
                match mem_available() {
                    Some(avail) if len <= avail / 2 => LoadMode::Read,
                    _ => LoadMode::Map,
                }
            }
            other => other,
        };
        let map = match mode {
            LoadMode::Map => {
                // SAFETY: the map is read-only. Like every mmap-based model loader (llama.cpp
                // included) we rely on the file not being truncated while it is in use; a
                // truncation by another process would fault, not corrupt memory we write.
                let map = unsafe { memmap2::Mmap::map(&file)? };
                // Lets the page cache use huge folios for what it reads in from now on
                // (faster streaming of the weights); refused on some systems: no harm.
                let _ = map.advise(memmap2::Advice::HugePage);
                map
            }
            LoadMode::Read | LoadMode::Auto => read_into_huge_pages(file)?,
        };
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

    /// True when the bytes come from a file (mapped or read), not from a `Vec`.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.backing, Backing::Map(_))
    }
}

/// The whole of `file` in anonymous memory advised for transparent huge pages.
fn read_into_huge_pages(mut file: File) -> std::io::Result<memmap2::Mmap> {
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| std::io::Error::other("file larger than the address space"))?;
    if len == 0 {
        // Nothing to copy (the GGUF header check then fails with a clear message).
        // SAFETY: as in `map_file`.
        return unsafe { memmap2::Mmap::map(&file) };
    }
    let mut map = memmap2::MmapMut::map_anon(len)?;
    let _ = map.advise(memmap2::Advice::HugePage);
    file.read_exact(&mut map)?;
    map.make_read_only()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_and_map_give_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("gguf-load-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [0usize, 1, 4095, 3 << 20] {
            let path = dir.join(format!("f{len}"));
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            std::fs::write(&path, &bytes).unwrap();
            let mapped = MappedBytes::load_file(&path, LoadMode::Map).unwrap();
            let read = MappedBytes::load_file(&path, LoadMode::Read).unwrap();
            let auto = MappedBytes::load_file(&path, LoadMode::Auto).unwrap();
            assert_eq!(&*mapped, &bytes[..], "mapped, {len} bytes");
            assert_eq!(&*read, &bytes[..], "read, {len} bytes");
            assert_eq!(&*auto, &bytes[..], "auto, {len} bytes");
            assert!(read.is_mapped());
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
