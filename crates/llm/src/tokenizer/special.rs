//! Splitting a prompt at special-token texts before tokenization (llama.cpp's
//! `tokenizer_st_partition`): special tokens are searched longest first; every occurrence in
//! a not-yet-split text fragment becomes that token. Control and unknown tokens are only
//! recognised with `parse_special`; user-defined tokens always are.

use super::fxhash::{FxMap, map_with_capacity};
use super::vocab::{Vocab, attr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// `text[start..end]`, still to be tokenized.
    Text {
        start: usize,
        end: usize,
    },
    Token(u32),
}

/// Index over the special tokens that narrows the search to those that can occur in a text.
pub struct SpecialIndex {
    /// Positions (in `Vocab::special_tokens`) of tokens of 4+ bytes, by their first 4 bytes.
    by_prefix: FxMap<[u8; 4], Vec<u32>>,
    /// Positions of shorter tokens: always searched.
    short: Vec<u32>,
}

impl SpecialIndex {
    pub fn build(vocab: &Vocab) -> SpecialIndex {
        let mut by_prefix: FxMap<[u8; 4], Vec<u32>> = map_with_capacity(vocab.special_tokens.len());
        let mut short = Vec::new();
        for (pos, &id) in vocab.special_tokens.iter().enumerate() {
            let text = vocab.tokens[id as usize].text.as_bytes();
            match text.first_chunk::<4>() {
                Some(prefix) => by_prefix.entry(*prefix).or_default().push(pos as u32),
                None => short.push(pos as u32),
            }
        }
        SpecialIndex { by_prefix, short }
    }

    /// Positions of the special tokens that may occur in `text`, in search order.
    fn candidates(&self, text: &[u8]) -> Vec<u32> {
        let mut found = self.short.clone();
        let mut seen: FxMap<[u8; 4], ()> = FxMap::default();
        for w in text.windows(4) {
            let key = [w[0], w[1], w[2], w[3]];
            if let Some(list) = self.by_prefix.get(&key)
                && seen.insert(key, ()).is_none()
            {
                found.extend_from_slice(list);
            }
        }
        found.sort_unstable();
        found
    }
}

/// Splits `text` into raw-text fragments and special tokens.
pub fn partition(
    vocab: &Vocab,
    index: &SpecialIndex,
    text: &str,
    parse_special: bool,
) -> Vec<Fragment> {
    let mut fragments = vec![Fragment::Text {
        start: 0,
        end: text.len(),
    }];
    for pos in index.candidates(text.as_bytes()) {
        let id = vocab.special_tokens[pos as usize];
        let token = &vocab.tokens[id as usize];
        if !parse_special && token.attr & (attr::CONTROL | attr::UNKNOWN) != 0 {
            continue;
        }
        let needle = &*token.text;
        if !text.contains(needle) {
            continue;
        }
        let mut split = Vec::with_capacity(fragments.len() + 2);
        for fragment in fragments {
            match fragment {
                Fragment::Token(_) => split.push(fragment),
                Fragment::Text { start, end } => {
                    split_fragment(text, start, end, needle, id, token.attr, &mut split)
                }
            }
        }
        fragments = split;
    }
    fragments
}

/// Replaces every occurrence of `needle` in `text[start..end]` (left to right, not
/// overlapping) by the token, honouring the token's lstrip / rstrip attributes.
fn split_fragment(
    text: &str,
    start: usize,
    end: usize,
    needle: &str,
    id: u32,
    token_attr: u16,
    out: &mut Vec<Fragment>,
) {
    let bytes = text.as_bytes();
    let mut from = start;
    while from < end {
        let Some(offset) = text[from..end].find(needle) else {
            out.push(Fragment::Text { start: from, end });
            return;
        };
        let at = from + offset;
        let mut left_end = at;
        if token_attr & attr::LSTRIP != 0 {
            while left_end > from && is_c_space(bytes[left_end - 1]) {
                left_end -= 1;
            }
        }
        if left_end > from {
            out.push(Fragment::Text {
                start: from,
                end: left_end,
            });
        }
        out.push(Fragment::Token(id));
        from = at + needle.len();
        if token_attr & attr::RSTRIP != 0 {
            while from < end && is_c_space(bytes[from]) {
                from += 1;
            }
        }
    }
}

/// C `isspace` in the "C" locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}
