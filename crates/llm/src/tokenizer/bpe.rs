//! Byte-level BPE as llama.cpp runs it for `gpt2` vocabularies: each pre-tokenized word
//! (already in GPT-2's printable byte encoding) starts as single characters; the adjacent
//! pair with the lowest merge rank (leftmost on ties) is merged until no ranked pair is left.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::vocab::Vocab;

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

struct Bigram {
    rank: u32,
    left: usize,
    right: usize,
    size: usize,
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap on the reverse: lowest rank first, then the leftmost pair.
        other
            .rank
            .cmp(&self.rank)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Bigram {}

/// Reusable buffers for tokenizing many words.
#[derive(Default)]
pub struct BpeScratch {
    symbols: Vec<Symbol>,
    queue: BinaryHeap<Bigram>,
    key: String,
}

/// Tokenizes one encoded word and appends the ids to `out`.
pub fn tokenize_word(vocab: &Vocab, word: &str, scratch: &mut BpeScratch, out: &mut Vec<u32>) {
    if word.is_empty() {
        return;
    }
    if vocab.ignore_merges
        && let Some(id) = vocab.id_of(word)
    {
        out.push(id);
        return;
    }

    let BpeScratch {
        symbols,
        queue,
        key,
    } = scratch;
    symbols.clear();
    queue.clear();
    for (i, (start, c)) in word.char_indices().enumerate() {
        let len = c.len_utf8();
        symbols.push(Symbol {
            start,
            len,
            prev: i.checked_sub(1),
            next: (start + len < word.len()).then_some(i + 1),
        });
    }

    let mut try_add = |symbols: &[Symbol],
                       queue: &mut BinaryHeap<Bigram>,
                       left: Option<usize>,
                       right: Option<usize>| {
        let (Some(left), Some(right)) = (left, right) else {
            return;
        };
        let (l, r) = (symbols[left], symbols[right]);
        key.clear();
        key.push_str(&word[l.start..l.start + l.len]);
        key.push(' ');
        key.push_str(&word[r.start..r.start + r.len]);
        if let Some(&rank) = vocab.merges.get(key.as_str()) {
            queue.push(Bigram {
                rank,
                left,
                right,
                size: l.len + r.len,
            });
        }
    };
    for i in 1..symbols.len() {
        try_add(symbols, queue, Some(i - 1), Some(i));
    }

    while let Some(bigram) = queue.pop() {
        let (l, r) = (symbols[bigram.left], symbols[bigram.right]);
        // Pieces only grow, so a length mismatch is exactly "this pair has changed".
        if l.len == 0 || r.len == 0 || l.len + r.len != bigram.size {
            continue;
        }
        symbols[bigram.left].len += r.len;
        symbols[bigram.right].len = 0;
        symbols[bigram.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(bigram.left);
        }
        try_add(symbols, queue, l.prev, Some(bigram.left));
        try_add(symbols, queue, Some(bigram.left), r.next);
    }

    let mut cur = Some(0);
    while let Some(i) = cur {
        let s = symbols[i];
        let piece = &word[s.start..s.start + s.len];
        match vocab.id_of(piece) {
            Some(id) => out.push(id),
            None => {
                // As llama.cpp: look each byte up as a one-byte token text; only ASCII bytes
                // can be one (encoded pieces are never unknown in practice: every GPT-2
                // byte character is a token of a byte-level vocabulary).
                let mut buf = [0u8; 4];
                out.extend(
                    piece
                        .bytes()
                        .filter(u8::is_ascii)
                        .filter_map(|b| vocab.id_of(char::from(b).encode_utf8(&mut buf))),
                );
            }
        }
        cur = s.next;
    }
}
