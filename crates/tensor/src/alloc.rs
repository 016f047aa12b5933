//! A global allocator that keeps freed large blocks for reuse.
//!
//! An encoder layer allocates and frees the same few large activation buffers (a 4096-patch
//! SigLIP feed-forward: 70 MB) every layer. The system allocator hands blocks that large
//! back to the kernel on free and maps fresh ones on the next allocation, so every layer
//! pays a page fault and a page clear per 4 KiB: ~11% of an encode was kernel time. This
//! allocator keeps freed blocks of at least [`MIN_BLOCK`] bytes in a small table and gives
//! one back when a block of the same size and alignment is asked for (cleared with a
//! `memset` for zeroed allocations, several times faster than faulting pages in).
//!
//! A block it cannot serve comes fresh from the system, advised for transparent huge pages
//! so that it faults in 2 MiB at a time rather than 4 KiB ([`advise_huge_pages`]).
//!
//! Peak memory stays where it was: kept blocks only fill the room under the high-water mark
//! of live large blocks. A large allocation that finds no block of its size, where a new
//! block would not fit under that mark beside the kept ones, is first lent the smallest kept
//! block that holds it (whole: it stays counted at its real size until freed, when it is
//! kept again at that size). Only when none is large enough are kept blocks returned to the
//! system until live + kept + the new block fit under the mark (all of
//! them when the new block sets a new mark). Install it in a binary with
//! `#[global_allocator] static ALLOC: tensor::alloc::ReuseLarge = tensor::alloc::ReuseLarge;`.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Smallest block kept for reuse (smaller ones are the system allocator's business).
pub const MIN_BLOCK: usize = 1 << 20;
/// Blocks kept at most (and blocks lent at most).
const SLOTS: usize = 32;

#[derive(Clone, Copy)]
struct Kept {
    addr: usize,
    size: usize,
    align: usize,
}

/// Large-block bookkeeping. Plain arrays and counters: the allocator must not allocate
/// while it holds the lock.
struct Table {
    /// Freed large blocks (`addr` 0: empty slot).
    kept: [Kept; SLOTS],
    /// Kept blocks handed out for a smaller request, at their real size and alignment.
    lent: [Kept; SLOTS],
    kept_bytes: usize,
    /// Bytes of large blocks handed out and not freed.
    live: usize,
    /// The most `live` has been.
    peak: usize,
}

const EMPTY: Kept = Kept {
    addr: 0,
    size: 0,
    align: 0,
};

static TABLE: Mutex<Table> = Mutex::new(Table {
    kept: [EMPTY; SLOTS],
    lent: [EMPTY; SLOTS],
    kept_bytes: 0,
    live: 0,
    peak: 0,
});

impl Table {
    /// Returns the block kept in slot `i` (if any) to the system.
    fn free_slot(&mut self, i: usize) {
        let k = self.kept[i];
        if k.addr == 0 {
            return;
        }
        // SAFETY: the block was allocated by `System` with this size and alignment and
        // handed to `dealloc`, which kept it instead of freeing it; only the table has it.
        unsafe {
            System.dealloc(
                k.addr as *mut u8,
                Layout::from_size_align_unchecked(k.size, k.align),
            )
        };
        self.kept[i].addr = 0;
        self.kept_bytes -= k.size;
    }
}

/// The system allocator, reusing freed blocks of at least [`MIN_BLOCK`] bytes.
pub struct ReuseLarge;

fn table() -> std::sync::MutexGuard<'static, Table> {
    // The table holds plain addresses and counters; it is consistent after any panic.
    TABLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a kept block of `layout`'s size and alignment (counted live), or lends a larger
/// kept block when a new one would not fit under the high-water mark, or, when neither is
/// possible, makes room under the mark for a new one and returns `None`.
fn take(layout: Layout) -> Option<*mut u8> {
    let mut t = table();
    let size = layout.size();
    if let Some(slot) = t
        .kept
        .iter_mut()
        .find(|k| k.addr != 0 && k.size == size && k.align == layout.align())
    {
        let addr = slot.addr;
        slot.addr = 0;
        t.kept_bytes -= size;
        t.live += size;
        return Some(addr as *mut u8);
    }
    if t.live + t.kept_bytes + size > t.peak
        && let Some(addr) = lend(&mut t, layout)
    {
        return Some(addr);
    }
    t.live += size;
    t.peak = t.peak.max(t.live);
    for i in 0..SLOTS {
        if t.live + t.kept_bytes <= t.peak {
            break;
        }
        t.free_slot(i);
    }
    None
}

/// Hands out the smallest kept block that holds `layout` (its address aligned to it) and
/// keeps live under the high-water mark, recording its real size for `dealloc`. A new block
/// would instead have cost returning kept blocks to the system, and faulting their pages in
/// again when their size is next asked for: a SmolVLM encode's layers free four 24 MB blocks,
/// ask for a few 3 MB ones, then for the 24 MB ones again (2.4 GB of fresh pages per encode).
fn lend(t: &mut Table, layout: Layout) -> Option<*mut u8> {
    let room = t.peak.checked_sub(t.live)?;
    let fits = |k: &Kept| {
        k.addr != 0
            && k.size >= layout.size()
            && k.size <= room
            && k.addr.is_multiple_of(layout.align())
    };
    let (i, block) = t
        .kept
        .iter()
        .enumerate()
        .filter(|(_, k)| fits(k))
        .min_by_key(|(_, k)| k.size)
        .map(|(i, k)| (i, *k))?;
    let record = t.lent.iter_mut().find(|l| l.addr == 0)?;
    *record = block;
    t.kept[i].addr = 0;
    t.kept_bytes -= block.size;
    t.live += block.size;
    Some(block.addr as *mut u8)
}

/// Counts a large block freed (a lent one at its real size, its record dropped) and keeps
/// it for reuse; when the table is full, returns the layout to free it with.
fn keep(ptr: *mut u8, layout: Layout) -> Result<(), Layout> {
    let mut t = table();
    let layout = match t.lent.iter_mut().find(|l| l.addr == ptr as usize) {
        Some(record) => {
            record.addr = 0;
            // SAFETY: the size and alignment the `System` block was allocated with.
            unsafe { Layout::from_size_align_unchecked(record.size, record.align) }
        }
        None => layout,
    };
    t.live = t.live.saturating_sub(layout.size());
    let Some(slot) = t.kept.iter_mut().find(|k| k.addr == 0) else {
        return Err(layout);
    };
    *slot = Kept {
        addr: ptr as usize,
        size: layout.size(),
        align: layout.align(),
    };
    t.kept_bytes += layout.size();
    Ok(())
}

/// Returns the memory of freed blocks to the system: every kept block, and (with glibc) the
/// free pages of every malloc arena. Called after a media encode: its activations were freed,
/// but the kept blocks and the encoding thread's arena would otherwise stay resident while
/// the decoder, on another thread and with other sizes, faults in its own buffers, and the
/// two add up to the peak (a Gemma 3 4B run: ~130 MB above the encode's own plateau). The next
/// encode faults its buffers in once more, a few milliseconds against seconds of compute.
pub fn release_free_memory() {
    {
        let mut t = table();
        for i in 0..SLOTS {
            t.free_slot(i);
        }
    }
    trim_system_allocator();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_system_allocator() {
    unsafe extern "C" {
        /// glibc: releases free memory at the top of each arena and, since 2.8, the whole
        /// free pages inside them (`MADV_DONTNEED`). Returns 1 when memory was released.
        fn malloc_trim(pad: usize) -> i32;
    }
    // SAFETY: takes no pointers; glibc locks each arena while it trims it.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_system_allocator() {}

/// Smallest fresh block advised for transparent huge pages: it spans at least one whole
/// aligned 2 MiB page.
const HUGE_ADVICE_MIN: usize = 4 << 20;

/// Advises the 2 MiB-aligned interior of a fresh large block for transparent huge pages
/// (Linux, where they are enabled for advised memory only by default). A block the cache
/// above cannot serve (another size, or no room under the high-water mark) is faulted in
/// on first touch, and in 4 KiB pages that cost a trap each: a Qwen2.5-VL 896x672 encode
/// took ~1.1 M of them. With huge pages it takes one per 2 MiB. A hint: errors are ignored.
fn advise_huge_pages(p: *mut u8, size: usize) {
    #[cfg(target_os = "linux")]
    if !p.is_null() && size >= HUGE_ADVICE_MIN {
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let start = (p as usize).next_multiple_of(HUGE);
        let end = (p as usize + size) / HUGE * HUGE;
        if end > start {
            // SAFETY: [start, end) lies inside the block just allocated for the caller;
            // MADV_HUGEPAGE changes only how its pages are backed, never their contents.
            unsafe { madvise(start as *mut std::ffi::c_void, end - start, MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, size);
}

// SAFETY: every block comes from `System` with the layout it is later freed or reused
// with (reuse at the same size and alignment, or lent whole with its real layout recorded
// and restored on free); the table hands a block out once.
unsafe impl GlobalAlloc for ReuseLarge {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BLOCK
            && let Some(p) = take(layout)
        {
            return p;
        }
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
        let p = unsafe { System.alloc(layout) };
        advise_huge_pages(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MIN_BLOCK
            && let Some(p) = take(layout)
        {
            // SAFETY: `p` is a live block of `layout.size()` bytes owned by the caller now.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        advise_huge_pages(p, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let layout = if layout.size() < MIN_BLOCK {
            layout
        } else {
            match keep(ptr, layout) {
                Ok(()) => return,
                Err(real) => real,
            }
        };
        // SAFETY: `ptr` came from `System` with `layout`, its real one (kept blocks are never
        // freed twice: `take` empties a slot before the block leaves it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, new) = (layout.size(), new_size);
        if old >= MIN_BLOCK && table().lent.iter().any(|l| l.addr == ptr as usize) {
            // A lent block is larger than `layout` says: move it rather than have the system
            // resize it by the wrong size.
            // SAFETY: `new_size` with the old alignment is a valid layout (caller's
            // guarantee); the old block holds `old` bytes and is freed by its owner's layout.
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let p = self.alloc(new_layout);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, old.min(new));
                    self.dealloc(ptr, layout);
                }
                return p;
            }
        }
        // Every other live block is a `System` block, so the system can resize it in place.
        // SAFETY: forwarded with the caller's guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && (old >= MIN_BLOCK || new >= MIN_BLOCK) {
            let mut t = table();
            if old >= MIN_BLOCK {
                t.live = t.live.saturating_sub(old);
            }
            if new >= MIN_BLOCK {
                t.live += new;
                t.peak = t.peak.max(t.live);
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is global: these tests take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_freed_large_block_is_reused_zeroed_and_others_are_released() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = ReuseLarge;
        let big = Layout::from_size_align(3 << 20, 64).unwrap();
        let other = Layout::from_size_align(5 << 20, 64).unwrap();
        unsafe {
            let p = a.alloc_zeroed(big);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 7, big.size());
            a.dealloc(p, big);
            // Same size and alignment: the same block, cleared.
            let q = a.alloc_zeroed(big);
            assert_eq!(q, p);
            let bytes = std::slice::from_raw_parts(q, big.size());
            assert!(bytes.iter().all(|&b| b == 0));
            a.dealloc(q, big);
            // Another size, above the high-water mark: the kept block goes back to the system.
            let r = a.alloc(other);
            assert!(!r.is_null());
            assert!(table().kept.iter().all(|k| k.addr != p as usize));
            a.dealloc(r, other);
            // Small blocks are never kept.
            let small = Layout::from_size_align(4096, 8).unwrap();
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert!(table().kept.iter().all(|k| k.addr != s as usize));
        }
    }

    #[test]
    fn fresh_blocks_advised_for_huge_pages_hold_what_is_written() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = ReuseLarge;
        release_free_memory();
        // Odd sizes: the advice covers only the aligned interior, the edges stay as they are.
        // (At most 7 MiB: the high-water mark is global, and the test above needs it low.)
        for size in [(6 << 20) + 123, 4 << 20, (2 << 20) + 1] {
            let layout = Layout::from_size_align(size, 64).unwrap();
            unsafe {
                let p = a.alloc_zeroed(layout);
                assert!(!p.is_null());
                let bytes = std::slice::from_raw_parts_mut(p, size);
                assert!(bytes.iter().all(|&b| b == 0));
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = (i % 251) as u8;
                }
                assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
                a.dealloc(p, layout);
            }
        }
        release_free_memory();
    }

    #[test]
    fn released_blocks_leave_the_table() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = ReuseLarge;
        let layout = Layout::from_size_align(7 << 20, 64).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            a.dealloc(p, layout);
            assert!(table().kept.iter().any(|k| k.addr == p as usize));
            release_free_memory();
            assert!(table().kept.iter().all(|k| k.addr != p as usize));
            // The next block of that size is a fresh one from the system, and usable.
            let q = a.alloc_zeroed(layout);
            assert!(!q.is_null());
            assert_eq!(*q.add(layout.size() - 1), 0);
            a.dealloc(q, layout);
        }
    }

    #[test]
    fn a_smaller_request_under_the_mark_borrows_a_kept_block_whole() {
        let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let a = ReuseLarge;
        release_free_memory();
        // A mark of two 3 MiB blocks, 7.5 MiB at most with the moved one below (the mark is
        // global: the first test needs it under 8 MiB).
        let big = Layout::from_size_align(3 << 20, 64).unwrap();
        let small = Layout::from_size_align(3 << 19, 64).unwrap();
        unsafe {
            let p = a.alloc(big);
            let q = a.alloc(big);
            assert!(!p.is_null() && !q.is_null());
            a.dealloc(p, big);
            // Live 3 + kept 3 + 1.5 would pass the mark: a kept block is lent, not a new one made.
            let r = a.alloc_zeroed(small);
            assert_eq!(r, p);
            let bytes = std::slice::from_raw_parts_mut(r, small.size());
            assert!(bytes.iter().all(|&b| b == 0));
            bytes.fill(5);
            // Grown past its request: moved to a new block with its contents.
            let r = a.realloc(r, small, small.size() + 4096);
            assert!(!r.is_null());
            assert!(
                std::slice::from_raw_parts(r, small.size())
                    .iter()
                    .all(|&b| b == 5)
            );
            a.dealloc(r, Layout::from_size_align(small.size() + 4096, 64).unwrap());
            // p went back to the table at its real size: the next 3 MiB request gets it.
            let s = a.alloc(big);
            assert_eq!(s, p);
            a.dealloc(s, big);
            a.dealloc(q, big);
        }
        release_free_memory();
    }
}
