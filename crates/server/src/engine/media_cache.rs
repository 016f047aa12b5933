//! Image embeddings shared by every slot, keyed by the image's content hash, so a follow-up
//! turn or another conversation with the same picture skips the vision encoder. Bounded by
//! the bytes of its f32 values; the least recently used entries go first.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub type Embeddings = Arc<Vec<f32>>;

struct Entry {
    embd: Embeddings,
    /// Last use, in `MediaCache::clock` ticks (the key of `order`).
    tick: u64,
}

/// An LRU map from content id to embeddings, bounded by `max_bytes` (0: caches nothing).
pub struct MediaCache {
    max_bytes: usize,
    bytes: usize,
    clock: u64,
    entries: HashMap<String, Entry>,
    /// Tick of last use -> id, oldest first.
    order: BTreeMap<u64, String>,
    hits: u64,
}

fn size_of(embd: &[f32]) -> usize {
    std::mem::size_of_val(embd)
}

impl MediaCache {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            bytes: 0,
            clock: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            hits: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The embeddings of `id`, marking them most recently used and counting a hit.
    pub fn get(&mut self, id: &str) -> Option<Embeddings> {
        let now = self.tick();
        let entry = self.entries.get_mut(id)?;
        self.order.remove(&entry.tick);
        entry.tick = now;
        self.order.insert(now, id.to_string());
        self.hits += 1;
        Some(entry.embd.clone())
    }

    /// Stores `embd` under `id`, evicting the least recently used entries to stay within the
    /// bound. An entry larger than the whole bound is not stored.
    pub fn insert(&mut self, id: &str, embd: Embeddings) {
        let size = size_of(&embd);
        if size > self.max_bytes {
            return;
        }
        self.remove(id);
        while self.bytes + size > self.max_bytes {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.remove(&oldest) {
                self.bytes -= size_of(&e.embd);
            }
        }
        let tick = self.tick();
        self.order.insert(tick, id.to_string());
        self.entries.insert(id.to_string(), Entry { embd, tick });
        self.bytes += size;
    }

    fn remove(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.order.remove(&e.tick);
            self.bytes -= size_of(&e.embd);
        }
    }

    /// Bytes of embeddings held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Lookups answered from the cache since it was made.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embd(n: usize) -> Embeddings {
        Arc::new(vec![0.5; n])
    }

    #[test]
    fn evicts_least_recently_used_first() {
        // Room for three 4-value (16-byte) entries.
        let mut c = MediaCache::new(48);
        c.insert("a", embd(4));
        c.insert("b", embd(4));
        c.insert("c", embd(4));
        assert!(c.get("a").is_some()); // a is now newer than b
        c.insert("d", embd(4));
        assert!(!c.contains("b"), "b was the least recently used");
        assert!(c.contains("a") && c.contains("c") && c.contains("d"));
        c.insert("e", embd(4));
        assert!(!c.contains("c"));
        assert_eq!(c.len(), 3);
        assert_eq!(c.bytes(), 48);
    }

    #[test]
    fn byte_bound_holds_and_oversized_entries_are_skipped() {
        let mut c = MediaCache::new(40);
        c.insert("big", embd(11)); // 44 bytes > 40
        assert!(!c.contains("big"));
        assert_eq!(c.bytes(), 0);
        c.insert("a", embd(4));
        c.insert("b", embd(4));
        c.insert("c", embd(6)); // 16 + 16 + 24 > 40: only the oldest (a) goes
        assert!(!c.contains("a"));
        assert!(c.contains("b") && c.contains("c"));
        assert_eq!(c.bytes(), 40);
        c.insert("d", embd(10)); // 40 bytes: everything else goes
        assert_eq!(c.len(), 1);
        assert_eq!(c.bytes(), 40);
        // Replacing an entry does not count it twice.
        c.insert("d", embd(2));
        assert_eq!(c.bytes(), 8);
    }

    #[test]
    fn zero_bound_disables_and_hits_are_counted() {
        let mut off = MediaCache::new(0);
        off.insert("a", embd(1));
        assert!(off.get("a").is_none());
        assert_eq!(off.hits(), 0);

        let mut c = MediaCache::new(1024);
        assert!(c.get("a").is_none());
        c.insert("a", embd(3));
        assert_eq!(c.get("a").map(|e| e.len()), Some(3));
        assert!(c.get("a").is_some());
        assert!(c.get("zzz").is_none());
        assert_eq!(c.hits(), 2);
    }
}
