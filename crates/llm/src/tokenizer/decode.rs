//! Token -> text: the per-token pieces (built once, as llama.cpp's piece cache),
//! `llama_detokenize`'s joining and space clean-up, and a streaming UTF-8 decoder.

use super::Tokenizer;
use super::vocab::{Vocab, VocabKind, attr};

/// Every token's piece as rendered with `special = true`, concatenated.
pub struct PieceTable {
    bytes: Vec<u8>,
    /// `offsets[id]..offsets[id + 1]` is the piece of `id`.
    offsets: Vec<u32>,
}

impl PieceTable {
    pub fn build(vocab: &Vocab) -> PieceTable {
        let total: usize = vocab.tokens.iter().map(|t| t.text.len()).sum();
        let mut bytes = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(vocab.tokens.len() + 1);
        offsets.push(0);
        for t in &vocab.tokens {
            append_piece(vocab, &t.text, t.attr, &mut bytes);
            offsets.push(bytes.len() as u32);
        }
        PieceTable { bytes, offsets }
    }

    pub fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }
}

fn append_piece(vocab: &Vocab, text: &str, a: u16, out: &mut Vec<u8>) {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if a & attr::NORMAL != 0 {
        match vocab.kind {
            VocabKind::Spm => out.extend_from_slice(text.replace('\u{2581}', " ").as_bytes()),
            VocabKind::Bpe => decode_byte_level(vocab, text, out),
        }
    } else if a & attr::BYTE != 0 {
        out.push(byte_token_value(text));
    }
    // Unused / undefined tokens render as nothing.
}

/// Undoes the GPT-2 byte encoding. A character outside the map is rendered the way
/// llama.cpp does: `[UNK_BYTE_0x<utf-8 hex><token text>]`.
fn decode_byte_level(vocab: &Vocab, text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match vocab.byte_map.byte_of(c) {
            Some(b) => out.push(b),
            None => {
                out.extend_from_slice(b"[UNK_BYTE_0x");
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.extend_from_slice(format!("{b:02x}").as_bytes());
                }
                out.extend_from_slice(text.as_bytes());
                out.push(b']');
            }
        }
    }
}

/// The byte of a `<0xXX>` token: the hex digits at text[3..5] (leading valid digits only, 0
/// if none, as strtol does).
fn byte_token_value(text: &str) -> u8 {
    let digits = text.get(3..).unwrap_or("").bytes().take(2);
    let mut value = 0u32;
    for d in digits {
        match (d as char).to_digit(16) {
            Some(v) => value = value * 16 + v,
            None => break,
        }
    }
    value as u8
}

impl Tokenizer {
    /// `llama_token_to_piece(id, lstrip = 0, special)`: the raw bytes of one token (may be a
    /// partial UTF-8 sequence). Control and unknown tokens give nothing unless `special`.
    /// Ids outside the vocabulary give nothing.
    pub fn piece_bytes(&self, id: u32, special: bool) -> &[u8] {
        if !special && self.vocab.attr(id) & (attr::UNKNOWN | attr::CONTROL) != 0 {
            return &[];
        }
        self.pieces.get(id)
    }

    /// Owned form of [`Tokenizer::piece_bytes`].
    pub fn token_to_piece(&self, id: u32, special: bool) -> Vec<u8> {
        self.piece_bytes(id, special).to_vec()
    }

    /// `llama_detokenize` as raw bytes.
    pub fn detokenize_bytes(
        &self,
        ids: &[u32],
        remove_special: bool,
        unparse_special: bool,
    ) -> Vec<u8> {
        let v = &self.vocab;
        let mut ids = ids;
        // The space the tokenizer put in front of the text is taken off again.
        let mut remove_space = v.add_space_prefix;
        if remove_special && v.add_bos && !ids.is_empty() && Some(ids[0]) == v.special.bos {
            remove_space = false;
            ids = &ids[1..];
        }
        if remove_special && v.add_eos && ids.last().is_some_and(|&id| Some(id) == v.special.eos) {
            ids = &ids[..ids.len() - 1];
        }

        let mut text = Vec::new();
        for &id in ids {
            let mut piece = self.piece_bytes(id, unparse_special);
            if remove_space && piece.first() == Some(&b' ') {
                piece = &piece[1..];
            }
            remove_space = false;
            text.extend_from_slice(piece);
        }
        if v.clean_spaces {
            clean_up_spaces(&mut text);
        }
        text
    }

    /// `llama_detokenize(ids, remove_special, unparse_special)`, invalid UTF-8 replaced by
    /// U+FFFD.
    pub fn detokenize(&self, ids: &[u32], remove_special: bool, unparse_special: bool) -> String {
        String::from_utf8_lossy(&self.detokenize_bytes(ids, remove_special, unparse_special))
            .into_owned()
    }
}

/// llama.cpp's three clean-up passes for BPE vocabularies: drop the space before `? ! . ,`,
/// collapse " ' " to "'", and drop the space before the contractions 's 'm 're 've.
///
/// Done in place exactly as llama.cpp does it, because later reads see earlier writes (pass 2
/// blanks the skipped space with a NUL that the next comparison then sees).
fn clean_up_spaces(text: &mut Vec<u8>) {
    // Pass 1: " ?" " !" " ." " ," lose the space.
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && matches!(x, b'?' | b'!' | b'.' | b',') {
            total -= 1;
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);

    // Pass 2: a lone apostrophe between spaces loses both spaces.
    let n = text.len();
    let mut total = usize::from(n > 0);
    let mut i = 1;
    while i < n {
        let x = text[i];
        if x == b'\'' && i + 1 < n && text[i - 1] == b' ' && text[i + 1] == b' ' {
            total -= 1;
            i += 1;
            text[i] = 0;
        }
        text[total] = x;
        total += 1;
        i += 1;
    }
    text.truncate(total);

    // Pass 3: " 's" " 'm" " 're" " 've" lose the space (" 't" " 'd" " 'll" keep it).
    let n = text.len();
    let mut total = usize::from(n > 0);
    for i in 1..n {
        let x = text[i];
        if text[i - 1] == b' ' && x == b'\'' && i + 1 < n {
            let x1 = text[i + 1];
            let x2 = if i + 2 < n { text[i + 2] } else { 0 };
            let contraction =
                matches!(x1, b's' | b'm') || matches!((x1, x2), (b'r', b'e') | (b'v', b'e'));
            if contraction {
                total -= 1;
            }
        }
        text[total] = x;
        total += 1;
    }
    text.truncate(total);
}

/// Turns a stream of token ids into text, emitting only complete UTF-8 characters and holding
/// back a character split across tokens until its last byte arrives. Bytes that can never
/// form a character are emitted as U+FFFD.
pub struct StreamDecoder<'t> {
    tokenizer: &'t Tokenizer,
    special: bool,
    pending: Vec<u8>,
}

impl<'t> StreamDecoder<'t> {
    /// `special`: render control tokens (as `token_to_piece(special)`).
    pub fn new(tokenizer: &'t Tokenizer, special: bool) -> Self {
        Self {
            tokenizer,
            special,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text that became complete (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        self.pending
            .extend_from_slice(self.tokenizer.piece_bytes(id, self.special));
        let (text, keep) = crate::utf8::decode_complete(&self.pending);
        let n = self.pending.len();
        self.pending.drain(..n - keep);
        text
    }

    /// Bytes held back waiting for the rest of a character.
    pub fn pending_bytes(&self) -> &[u8] {
        &self.pending
    }

    /// Ends the stream: whatever is held back comes out, invalid bytes as U+FFFD.
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> String {
        let mut v = s.as_bytes().to_vec();
        clean_up_spaces(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn clean_up_matches_llama_cpp_rules() {
        assert_eq!(clean("Hello , world !"), "Hello, world!");
        assert_eq!(clean("a ' b"), "a'b");
        assert_eq!(clean("it 's I 'm we 're you 've"), "it's I'm we're you've");
        assert_eq!(clean("don 't I 'd we 'll"), "don 't I 'd we 'll");
        assert_eq!(clean(" ."), ".");
        assert_eq!(clean(""), "");
        // The blanked space of the first collapse stops the second one.
        assert_eq!(clean("a ' ' b"), "a'' b");
    }

    #[test]
    fn byte_token_values() {
        assert_eq!(byte_token_value("<0x0A>"), 10);
        assert_eq!(byte_token_value("<0xFF>"), 255);
        assert_eq!(byte_token_value("<0x"), 0);
    }
}
