//! Byte-level BPE pre-tokenization: the regex word splitting selected by `tokenizer.ggml.pre`,
//! and the GPT-2 byte-to-unicode mapping applied to every word.
//!
//! The patterns are the ones llama.cpp (0c1e570) uses, in its ECMAScript-compatible spelling
//! (case-insensitive contractions written as `'[sS]`, Tekken's case classes written with
//! look-aheads). llama.cpp runs them either through hand-written splitters (GPT-2, Llama-3
//! patterns) or through std::regex over a "collapsed" text where every non-ASCII code point
//! stands for its Unicode category. Both treat `\p{L}`, `\p{N}`, `\p{P}`, `\p{S}`, `\p{M}` and
//! `\s` as the Unicode classes, which is what fancy-regex does on the real text, so running
//! the same patterns here splits identically (checked on the reference data).

use fancy_regex::Regex;

use super::error::TokenizerError;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
// Upper-then-lower and lower-only letter runs: "a letter that is not a-z" / "not A-Z".
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BAILING: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";
const BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// The pre-tokenizer families llama.cpp distinguishes (one regex list each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreKind {
    Default,
    Llama3,
    Qwen2,
    Qwen35,
    Tekken,
    Starcoder,
    Gpt2,
    Falcon,
    Bloom,
    Viking,
    Gpt4o,
    SeedCoder,
    Bailing,
}

impl PreKind {
    fn patterns(self) -> &'static [&'static str] {
        match self {
            PreKind::Default => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", "[0-9][0-9][0-9]"],
            PreKind::Llama3 => &[LLAMA3],
            PreKind::Qwen2 => &[QWEN2],
            PreKind::Qwen35 => &[QWEN35],
            PreKind::Tekken => &[TEKKEN],
            PreKind::Starcoder => &[r"\p{N}", GPT2],
            PreKind::Gpt2 => &[GPT2],
            PreKind::Falcon => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, "[0-9][0-9][0-9]"],
            PreKind::Bloom => &[BLOOM],
            PreKind::Viking => &[BLOOM, r"\p{N}"],
            PreKind::Gpt4o => &[GPT4O],
            PreKind::SeedCoder => &[SEED_CODER],
            PreKind::Bailing => &[BAILING],
        }
    }
}

/// How a `tokenizer.ggml.pre` name configures a BPE vocabulary (llama.cpp's per-name table).
#[derive(Debug, Clone, Copy)]
pub struct PreConfig {
    pub kind: PreKind,
    /// Detokenization tidies spaces before punctuation and contractions.
    pub clean_spaces: bool,
    /// A word that is a whole vocabulary entry is emitted without running the merges.
    pub ignore_merges: bool,
    /// The family adds BOS unless the metadata says otherwise.
    pub add_bos: bool,
}

impl PreConfig {
    /// `None` for names llama.cpp knows but whose patterns are not supported here, and for
    /// unknown names. A missing `tokenizer.ggml.pre` means "default".
    pub fn from_name(name: &str) -> Option<PreConfig> {
        use PreKind::*;
        let cfg = |kind, clean_spaces, ignore_merges, add_bos| PreConfig {
            kind,
            clean_spaces,
            ignore_merges,
            add_bos,
        };
        Some(match name {
            "" | "default" => cfg(Default, true, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => cfg(Llama3, true, true, true),
            "dbrx" | "smaug-bpe" => cfg(Llama3, true, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "hunyuan" | "solar-open" => {
                cfg(Qwen2, false, false, false)
            }
            "megrez" | "stablelm2" => cfg(Qwen2, true, false, false),
            "qwen35" => cfg(Qwen35, false, false, false),
            "tekken" => cfg(Tekken, false, true, true),
            "smollm" | "command-r" => cfg(Starcoder, false, false, false),
            "starcoder" | "refact" | "codeshell" | "exaone" | "minerva-7b" | "mellum2" => {
                cfg(Starcoder, true, false, false)
            }
            "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
            | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "mpt" | "olmo" | "jais"
            | "exaone4" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => {
                cfg(Gpt2, true, false, false)
            }
            "trillion" | "granite-docling" => cfg(Gpt2, false, false, false),
            "falcon" => cfg(Falcon, true, false, false),
            "poro-chat" => cfg(Bloom, false, false, false),
            "bloom" | "gpt3-finnish" => cfg(Bloom, true, false, false),
            "viking" => cfg(Viking, false, false, false),
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
                cfg(Gpt4o, false, false, false)
            }
            "seed-coder" => cfg(SeedCoder, false, false, false),
            "grok-2" => cfg(Qwen2, false, false, false),
            "bailingmoe" | "bailingmoe2" | "llada-moe" => cfg(Bailing, false, false, false),
            _ => return None,
        })
    }
}

/// Compiled word-splitting regexes, applied one after the other (each refines the pieces of
/// the previous one; text between matches becomes a piece of its own).
pub struct PreTokenizer {
    regexes: Vec<Regex>,
}

impl PreTokenizer {
    pub fn new(kind: PreKind) -> Result<PreTokenizer, TokenizerError> {
        let regexes = kind
            .patterns()
            .iter()
            .map(|p| {
                Regex::new(p).map_err(|e| TokenizerError::BadRegex {
                    pattern: (*p).to_string(),
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PreTokenizer { regexes })
    }

    /// Splits `text` into words (byte ranges; together they cover `text` exactly).
    pub fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut pieces = vec![(0, text.len())];
        for regex in &self.regexes {
            let mut refined = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                split_one(regex, text, start, end, &mut refined);
            }
            pieces = refined;
        }
        pieces
    }
}

/// Appends the matches of `regex` inside `text[start..end]` and the gaps between them.
fn split_one(regex: &Regex, text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
    let piece = &text[start..end];
    let mut last = 0;
    for found in regex.find_iter(piece) {
        // A backtracking limit error leaves the rest of the piece whole, rather than failing
        // tokenization; the patterns above never come near the limit on real text.
        let Ok(m) = found else { break };
        if m.start() == m.end() {
            continue;
        }
        if m.start() > last {
            out.push((start + last, start + m.start()));
        }
        out.push((start + m.start(), start + m.end()));
        last = m.end();
    }
    if last < piece.len() {
        out.push((start + last, end));
    }
}

/// GPT-2's reversible byte -> printable code point map: printable Latin-1 bytes map to
/// themselves, the others to 256, 257, ... in byte order.
pub struct ByteMap {
    to_char: [char; 256],
    /// Indexed by code point (all mapped code points are below 324).
    to_byte: [i16; 324],
}

impl ByteMap {
    pub fn new() -> ByteMap {
        let mut to_char = ['\0'; 256];
        let mut to_byte = [-1i16; 324];
        let printable =
            |b: usize| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
        let mut next = 256u32;
        for b in 0..256usize {
            let cp = if printable(b) {
                b as u32
            } else {
                next += 1;
                next - 1
            };
            to_char[b] = char::from_u32(cp).unwrap_or('\u{FFFD}');
            to_byte[cp as usize] = b as i16;
        }
        ByteMap { to_char, to_byte }
    }

    /// The printable form of raw bytes, as stored in byte-level BPE vocabularies.
    pub fn encode(&self, bytes: &[u8], out: &mut String) {
        out.clear();
        out.extend(bytes.iter().map(|&b| self.to_char[b as usize]));
    }

    pub fn byte_of(&self, c: char) -> Option<u8> {
        let i = c as usize;
        if i < self.to_byte.len() && self.to_byte[i] >= 0 {
            Some(self.to_byte[i] as u8)
        } else {
            None
        }
    }

    pub fn char_of(&self, b: u8) -> char {
        self.to_char[b as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(kind: PreKind, text: &str) -> Vec<String> {
        let pre = PreTokenizer::new(kind).unwrap();
        pre.split(text)
            .into_iter()
            .map(|(s, e)| text[s..e].to_string())
            .collect()
    }

    #[test]
    fn all_patterns_compile() {
        use PreKind::*;
        for kind in [
            Default, Llama3, Qwen2, Qwen35, Tekken, Starcoder, Gpt2, Falcon, Bloom, Viking, Gpt4o,
            SeedCoder, Bailing,
        ] {
            PreTokenizer::new(kind).unwrap();
        }
    }

    #[test]
    fn qwen2_splits_digits_and_trailing_spaces() {
        assert_eq!(
            words(PreKind::Qwen2, "Hello world 2024!!  \n  x"),
            [
                "Hello", " world", " ", "2", "0", "2", "4", "!!", "  \n", " ", " x"
            ]
        );
    }

    #[test]
    fn llama3_groups_three_digits_and_contractions() {
        assert_eq!(
            words(PreKind::Llama3, "I'LL pay 12345"),
            ["I", "'LL", " pay", " ", "123", "45"]
        );
    }

    #[test]
    fn gpt2_leaves_single_space_before_newline_alone() {
        assert_eq!(words(PreKind::Gpt2, "a \nb"), ["a", " ", "\n", "b"]);
    }

    #[test]
    fn tekken_splits_camel_case() {
        assert_eq!(
            words(PreKind::Tekken, "HelloWorld ABCdef"),
            ["Hello", "World", " ABCdef"]
        );
    }

    #[test]
    fn byte_map_is_gpt2s() {
        let m = ByteMap::new();
        assert_eq!(m.char_of(b' '), 'Ġ');
        assert_eq!(m.char_of(b'\n'), 'Ċ');
        assert_eq!(m.char_of(b'a'), 'a');
        for b in 0..=255u8 {
            assert_eq!(m.byte_of(m.char_of(b)), Some(b));
        }
    }
}
