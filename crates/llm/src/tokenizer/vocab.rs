//! The vocabulary as llama.cpp builds it from `tokenizer.ggml.*`: token texts, scores and
//! attributes, lookup maps, special token ids, flags, the end-of-generation set and the
//! special-token list used to split prompts.

use gguf::Value;

use super::error::TokenizerError;
use super::fxhash::{FxMap, map_with_capacity};
use super::metadata::{Metadata, wrong_type};
use super::pretokenize::{ByteMap, PreConfig, PreTokenizer};

/// Token attribute bits (llama.cpp's `llama_token_attr`).
pub mod attr {
    pub const UNDEFINED: u16 = 0;
    pub const UNKNOWN: u16 = 1 << 0;
    pub const UNUSED: u16 = 1 << 1;
    pub const NORMAL: u16 = 1 << 2;
    pub const CONTROL: u16 = 1 << 3;
    pub const USER_DEFINED: u16 = 1 << 4;
    pub const BYTE: u16 = 1 << 5;
    pub const NORMALIZED: u16 = 1 << 6;
    pub const LSTRIP: u16 = 1 << 7;
    pub const RSTRIP: u16 = 1 << 8;
    pub const SINGLE_WORD: u16 = 1 << 9;
}

/// `tokenizer.ggml.token_type` values (gguf-py `TokenType`).
fn attr_of_token_type(t: i64) -> u16 {
    match t {
        1 => attr::NORMAL,
        2 => attr::UNKNOWN,
        3 => attr::CONTROL,
        4 => attr::USER_DEFINED,
        5 => attr::UNUSED,
        6 => attr::BYTE,
        _ => attr::UNDEFINED,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VocabKind {
    /// SentencePiece-style (`tokenizer.ggml.model = llama`): score-ordered merges, `▁` spaces,
    /// `<0xXX>` byte fallback.
    Spm,
    /// Byte-level BPE (`gpt2`): regex pre-tokenization, GPT-2 byte map, ranked merges.
    Bpe,
}

pub struct TokenData {
    pub text: Box<str>,
    pub score: f32,
    pub attr: u16,
}

/// Ids of the tokens with a role. `None` where the model has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub sep: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
    pub fim_pre: Option<u32>,
    pub fim_suf: Option<u32>,
    pub fim_mid: Option<u32>,
    pub fim_pad: Option<u32>,
    pub fim_rep: Option<u32>,
    pub fim_sep: Option<u32>,
}

pub struct Vocab {
    pub kind: VocabKind,
    pub pre_name: String,
    pub tokens: Vec<TokenData>,
    pub token_to_id: FxMap<Box<str>, u32>,
    /// BPE merges keyed by "left right" (the GGUF spelling), valued by rank.
    pub merges: FxMap<Box<str>, u32>,
    pub special: SpecialIds,
    pub add_bos: bool,
    pub add_eos: bool,
    pub add_sep: bool,
    pub add_space_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub clean_spaces: bool,
    pub ignore_merges: bool,
    /// End-of-generation ids, sorted.
    pub eog: Vec<u32>,
    /// Control, user-defined and unknown tokens, longest text first: the order in which
    /// prompts are searched for them.
    pub special_tokens: Vec<u32>,
    pub pre: Option<PreTokenizer>,
    pub byte_map: ByteMap,
    /// The token of each raw byte (byte fallback), `None` where the vocabulary has none.
    byte_tokens: [Option<u32>; 256],
}

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SEP: &str = "tokenizer.ggml.add_sep_token";
const KEY_BOS: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS: &str = "tokenizer.ggml.eos_token_id";
// llama.cpp's spelling.
const KEY_SEP: &str = "tokenizer.ggml.seperator_token_id";

impl Vocab {
    pub fn load<'a, F: Fn(&str) -> Option<&'a Value>>(
        meta: &Metadata<'a, F>,
    ) -> Result<Vocab, TokenizerError> {
        let model = meta
            .str_opt(KEY_MODEL)?
            .ok_or(TokenizerError::MissingKey(KEY_MODEL))?;
        let pre_name = meta.str_opt(KEY_PRE)?.unwrap_or("").to_string();

        let mut special = SpecialIds::default();
        let (kind, mut add_bos, mut add_eos, mut add_space_prefix, clean_spaces, ignore_merges);
        let mut pre = None;
        match model {
            "llama" => {
                kind = VocabKind::Spm;
                special.bos = Some(1);
                special.eos = Some(2);
                special.unk = Some(0);
                add_bos = true;
                add_eos = false;
                add_space_prefix = true;
                clean_spaces = false;
                ignore_merges = false;
            }
            "gpt2" => {
                kind = VocabKind::Bpe;
                let cfg = PreConfig::from_name(&pre_name)
                    .ok_or_else(|| TokenizerError::UnsupportedPreTokenizer(pre_name.clone()))?;
                special.bos = Some(11);
                special.eos = Some(11);
                add_bos = cfg.add_bos;
                add_eos = false;
                add_space_prefix = false;
                clean_spaces = cfg.clean_spaces;
                ignore_merges = cfg.ignore_merges;
                pre = Some(PreTokenizer::new(cfg.kind)?);
            }
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        }
        if let Some(v) = meta.bool_opt("tokenizer.ggml.add_space_prefix")? {
            add_space_prefix = v;
        }
        let remove_extra_whitespaces = meta
            .bool_opt("tokenizer.ggml.remove_extra_whitespaces")?
            .unwrap_or(false);

        let texts = meta
            .strings_opt(KEY_TOKENS)?
            .ok_or(TokenizerError::MissingKey(KEY_TOKENS))?;
        let n_tokens = texts.len();
        if n_tokens >= i32::MAX as usize {
            return Err(TokenizerError::TooManyTokens(n_tokens));
        }
        let scores = read_scores(meta, n_tokens)?;
        let types = read_token_types(meta, n_tokens)?;

        let mut tokens = Vec::with_capacity(n_tokens);
        let mut token_to_id = map_with_capacity(n_tokens);
        for (i, text) in texts.iter().enumerate() {
            let id = i as u32;
            let text: Box<str> = if text.is_empty() {
                format!("[EMPTY_{i}]").into()
            } else {
                (*text).into()
            };
            if let Some(&first) = token_to_id.get(&text) {
                return Err(TokenizerError::DuplicateToken {
                    text: text.into(),
                    first,
                    second: id,
                });
            }
            token_to_id.insert(text.clone(), id);
            tokens.push(TokenData {
                text,
                score: scores.as_ref().map_or(0.0, |s| s[i]),
                attr: types
                    .as_ref()
                    .map_or(attr::NORMAL, |t| attr_of_token_type(t[i])),
            });
        }

        let merges = if kind == VocabKind::Bpe {
            read_merges(meta)?
        } else {
            FxMap::default()
        };

        read_special_ids(meta, &mut special, n_tokens)?;
        if let Some(v) = meta.bool_opt(KEY_ADD_BOS)? {
            add_bos = v;
        }
        if let Some(v) = meta.bool_opt(KEY_ADD_EOS)? {
            add_eos = v;
        }
        let add_sep = meta.bool_opt(KEY_ADD_SEP)?.unwrap_or(false);
        for (flag, on, id, id_key) in [
            (KEY_ADD_BOS, add_bos, special.bos, KEY_BOS),
            (KEY_ADD_EOS, add_eos, special.eos, KEY_EOS),
            (KEY_ADD_SEP, add_sep, special.sep, KEY_SEP),
        ] {
            if on && id.is_none() {
                return Err(TokenizerError::MissingSpecialToken { flag, id_key });
            }
        }

        let mut vocab = Vocab {
            kind,
            pre_name,
            tokens,
            token_to_id,
            merges,
            special,
            add_bos,
            add_eos,
            add_sep,
            add_space_prefix,
            remove_extra_whitespaces,
            clean_spaces,
            ignore_merges,
            eog: Vec::new(),
            special_tokens: Vec::new(),
            pre,
            byte_map: ByteMap::new(),
            byte_tokens: [None; 256],
        };
        for b in 0..=255u8 {
            vocab.byte_tokens[b as usize] = vocab.find_byte_token(b);
        }
        vocab.detect_special_tokens();
        vocab.build_special_list();
        let name = meta.str_opt("general.name")?.unwrap_or("").to_lowercase();
        let arch = meta.str_opt("general.architecture")?.unwrap_or("");
        vocab.apply_strip_attributes(&name, arch);
        Ok(vocab)
    }

    pub fn n_tokens(&self) -> usize {
        self.tokens.len()
    }

    pub fn id_of(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    pub fn attr(&self, id: u32) -> u16 {
        self.tokens
            .get(id as usize)
            .map_or(attr::UNDEFINED, |t| t.attr)
    }

    /// The token for one raw byte: `<0xXX>` for SentencePiece vocabularies (falling back to
    /// the byte itself as text), the GPT-2 mapped character for byte-level BPE.
    pub fn byte_to_token(&self, byte: u8) -> Option<u32> {
        self.byte_tokens[byte as usize]
    }

    fn find_byte_token(&self, byte: u8) -> Option<u32> {
        match self.kind {
            VocabKind::Spm => self.id_of(&format!("<0x{byte:02X}>")).or_else(|| {
                let mut buf = [0u8; 4];
                let s = char::from(byte).encode_utf8(&mut buf);
                // Only ASCII bytes form a one-byte string; others cannot be looked up.
                if byte.is_ascii() { self.id_of(s) } else { None }
            }),
            VocabKind::Bpe => {
                let mut buf = [0u8; 4];
                self.id_of(self.byte_map.char_of(byte).encode_utf8(&mut buf))
            }
        }
    }

    /// llama.cpp finds EOT/EOM/FIM tokens by their text when the metadata does not name them,
    /// and builds the end-of-generation set from a list of well-known texts. Tokens found
    /// this way become control tokens. Where several texts qualify for one role, the earlier
    /// entry of the list wins (llama.cpp leaves this to hash-map order; for the models in the
    /// reference data, e.g. Qwen's `<|im_end|>` vs `<|endoftext|>`, this picks the same id).
    fn detect_special_tokens(&mut self) {
        const EOT: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|end_of_text|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "<｜end▁of▁sentence｜>",
            "<end_of_utterance>",
        ];
        const EOM: &[&str] = &["<|eom_id|>"];
        const FIM_PRE: &[&str] = &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ];
        const FIM_SUF: &[&str] = &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ];
        const FIM_MID: &[&str] = &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ];
        const FIM_PAD: &[&str] = &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"];
        const FIM_REP: &[&str] = &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ];
        const FIM_SEP: &[&str] = &["<|file_sep|>"];
        const EOG: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<|return|>",
            "<|call|>",
            "<|flush|>",
            "<|calls|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "</s>",
            "<|eom_id|>",
            "<EOT>",
            "_<EOT>",
            "[EOT]",
            "[EOS]",
            "<|end_of_text|>",
            "<end_of_utterance>",
            "<eos>",
            "<turn|>",
            "<|tool_response>",
            "<｜end▁of▁sentence｜>",
            "[e~[",
        ];

        let mut s = self.special;
        for (slot, texts) in [
            (&mut s.eot, EOT),
            (&mut s.eom, EOM),
            (&mut s.fim_pre, FIM_PRE),
            (&mut s.fim_suf, FIM_SUF),
            (&mut s.fim_mid, FIM_MID),
            (&mut s.fim_pad, FIM_PAD),
            (&mut s.fim_rep, FIM_REP),
            (&mut s.fim_sep, FIM_SEP),
        ] {
            if slot.is_none()
                && let Some(id) = texts.iter().find_map(|t| self.id_of(t))
            {
                *slot = Some(id);
                self.tokens[id as usize].attr |= attr::CONTROL;
            }
        }
        self.special = s;

        // Control tokens named "unused..." are unused.
        for t in &mut self.tokens {
            if t.attr & attr::CONTROL != 0 && t.text.contains("unused") {
                t.attr |= attr::UNUSED;
            }
        }

        let mut eog: Vec<u32> = [s.fim_pad, s.fim_rep, s.fim_sep]
            .into_iter()
            .flatten()
            .collect();
        for text in EOG {
            if let Some(id) = self.id_of(text) {
                eog.push(id);
                self.tokens[id as usize].attr |= attr::CONTROL;
            }
        }
        // gpt-oss renders these channel markers as plain text.
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = self.id_of(text) {
                self.tokens[id as usize].attr = attr::USER_DEFINED;
            }
        }
        eog.extend([s.eos, s.eot, s.eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        let has = |eog: &[u32], text: &str| {
            eog.iter()
                .any(|&id| &*self.tokens[id as usize].text == text)
        };
        // o200k_harmony / solar-open: "<|end|>" ends a message, not the generation.
        let end = eog
            .iter()
            .copied()
            .find(|&id| &*self.tokens[id as usize].text == "<|end|>");
        if let Some(end) = end
            && (has(&eog, "<|call|>") || has(&eog, "<|calls|>"))
            && (has(&eog, "<|return|>") || has(&eog, "<|flush|>"))
        {
            eog.retain(|&id| id != end);
            self.tokens[end as usize].attr = attr::USER_DEFINED;
        }
        // Gemma 4 / PaddleOCR: "</s>" is an ordinary token there.
        let has = |eog: &[u32], text: &str| {
            eog.iter()
                .any(|&id| &*self.tokens[id as usize].text == text)
        };
        let s_id = eog
            .iter()
            .copied()
            .find(|&id| &*self.tokens[id as usize].text == "</s>");
        if let Some(s_id) = s_id
            && has(&eog, "<|tool_response>")
        {
            eog.retain(|&id| id != s_id);
            self.tokens[s_id as usize].attr = attr::NORMAL;
        }
        self.eog = eog;
    }

    fn build_special_list(&mut self) {
        let mask = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;
        let mut ids: Vec<u32> = (0..self.tokens.len() as u32)
            .filter(|&id| self.tokens[id as usize].attr & mask != 0)
            .collect();
        // Longest first; ties by id, so the order is deterministic.
        ids.sort_by_key(|&id| std::cmp::Reverse(self.tokens[id as usize].text.len()));
        self.special_tokens = ids;
    }

    /// llama.cpp's per-model lstrip/rstrip attributes (not stored in GGUF files).
    fn apply_strip_attributes(&mut self, name: &str, arch: &str) {
        let set = |v: &mut Vocab, text: &str, bit: u16, on: bool| {
            if let Some(id) = v.id_of(text) {
                let a = &mut v.tokens[id as usize].attr;
                *a = if on { *a | bit } else { *a & !bit };
            }
        };
        let pre = self.pre_name.clone();
        if ["jina-v2-de", "jina-v2-es", "jina-v2-code"]
            .iter()
            .any(|p| pre.contains(p))
            || ["nomic-bert-moe", "jina-bert-v3"]
                .iter()
                .any(|a| arch.contains(a))
        {
            set(self, "<mask>", attr::LSTRIP, true);
        } else if name.contains("phi-3") || name.contains("phi3") {
            for i in 0..self.special_tokens.len() {
                let id = self.special_tokens[i];
                self.tokens[id as usize].attr |= attr::RSTRIP;
            }
            set(self, "</s>", attr::RSTRIP, true);
            for text in ["<unk>", "<s>", "<|endoftext|>"] {
                set(self, text, attr::RSTRIP, false);
            }
        } else if name.contains("modern-bert") {
            set(self, "[MASK]", attr::LSTRIP, true);
        }
    }
}

fn read_scores<'a, F: Fn(&str) -> Option<&'a Value>>(
    meta: &Metadata<'a, F>,
    n_tokens: usize,
) -> Result<Option<Vec<f32>>, TokenizerError> {
    let Some(items) = meta.array_opt(KEY_SCORES)? else {
        return Ok(None);
    };
    if items.len() < n_tokens {
        return Err(TokenizerError::ArrayTooShort {
            key: KEY_SCORES,
            found: items.len(),
            n_tokens,
        });
    }
    items[..n_tokens]
        .iter()
        .map(|v| match v {
            Value::F32(f) => Ok(*f),
            Value::F64(f) => Ok(*f as f32),
            other => other
                .as_i64()
                .map(|i| i as f32)
                .ok_or_else(|| wrong_type(KEY_SCORES, "array of f32 or i32", other)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn read_token_types<'a, F: Fn(&str) -> Option<&'a Value>>(
    meta: &Metadata<'a, F>,
    n_tokens: usize,
) -> Result<Option<Vec<i64>>, TokenizerError> {
    let Some(items) = meta.array_opt(KEY_TOKEN_TYPE)? else {
        return Ok(None);
    };
    if items.len() < n_tokens {
        return Err(TokenizerError::ArrayTooShort {
            key: KEY_TOKEN_TYPE,
            found: items.len(),
            n_tokens,
        });
    }
    items[..n_tokens]
        .iter()
        .map(|v| {
            v.as_i64()
                .ok_or_else(|| wrong_type(KEY_TOKEN_TYPE, "array of i32", v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn read_merges<'a, F: Fn(&str) -> Option<&'a Value>>(
    meta: &Metadata<'a, F>,
) -> Result<FxMap<Box<str>, u32>, TokenizerError> {
    let merges = meta
        .strings_opt(KEY_MERGES)?
        .ok_or(TokenizerError::MissingKey(KEY_MERGES))?;
    let mut map = map_with_capacity(merges.len());
    for (rank, m) in merges.iter().enumerate() {
        // llama.cpp splits at the first space after the first byte; an entry without one
        // can never match a pair, so it is dropped. The first rank of a duplicate wins.
        if m.as_bytes().iter().skip(1).any(|&b| b == b' ') {
            map.entry((*m).into()).or_insert(rank as u32);
        }
    }
    Ok(map)
}

fn read_special_ids<'a, F: Fn(&str) -> Option<&'a Value>>(
    meta: &Metadata<'a, F>,
    s: &mut SpecialIds,
    n_tokens: usize,
) -> Result<(), TokenizerError> {
    let apply = |key: &'static str, slot: &mut Option<u32>| -> Result<(), TokenizerError> {
        // Defaults outside the vocabulary are dropped; out-of-range metadata ids are ignored.
        if slot.is_some_and(|id| id as usize >= n_tokens) {
            *slot = None;
        }
        if let Some(id) = meta.id_opt(key)?
            && (id as usize) < n_tokens
        {
            *slot = Some(id);
        }
        Ok(())
    };
    apply(KEY_BOS, &mut s.bos)?;
    apply(KEY_EOS, &mut s.eos)?;
    apply("tokenizer.ggml.eot_token_id", &mut s.eot)?;
    apply("tokenizer.ggml.eom_token_id", &mut s.eom)?;
    apply("tokenizer.ggml.unknown_token_id", &mut s.unk)?;
    apply(KEY_SEP, &mut s.sep)?;
    apply("tokenizer.ggml.padding_token_id", &mut s.pad)?;
    apply("tokenizer.ggml.mask_token_id", &mut s.mask)?;
    apply("tokenizer.ggml.fim_pre_token_id", &mut s.fim_pre)?;
    apply("tokenizer.ggml.fim_suf_token_id", &mut s.fim_suf)?;
    apply("tokenizer.ggml.fim_mid_token_id", &mut s.fim_mid)?;
    apply("tokenizer.ggml.fim_pad_token_id", &mut s.fim_pad)?;
    apply("tokenizer.ggml.fim_rep_token_id", &mut s.fim_rep)?;
    apply("tokenizer.ggml.fim_sep_token_id", &mut s.fim_sep)?;
    // Older spellings of the FIM keys.
    apply("tokenizer.ggml.prefix_token_id", &mut s.fim_pre)?;
    apply("tokenizer.ggml.suffix_token_id", &mut s.fim_suf)?;
    apply("tokenizer.ggml.middle_token_id", &mut s.fim_mid)?;
    Ok(())
}
