//! Synthetic tokenizers of the real size: unique token strings, the real special tokens
//! (by text, at their real ids where known), BPE merges that build every multi-character
//! token, and the `tokenizer.*` keys the converter writes for each family.

use gguf::{Array, Value, ValueType};

use super::synth_presets::VocabKind;

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// GPT-2's printable stand-ins for the 256 bytes, printable ASCII first (the order byte-level
/// vocabularies start with).
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (33..=126).chain(161..=172).chain(174..=255).collect();
    let mut others = 0;
    let mut map = vec!['\0'; 256];
    for &b in &printable {
        map[b as usize] = char::from_u32(b).unwrap_or('?');
    }
    for b in 0..256u32 {
        if !printable.contains(&b) {
            map[b as usize] = char::from_u32(256 + others).unwrap_or('?');
            others += 1;
            printable.push(b);
        }
    }
    printable.iter().map(|&b| map[b as usize]).collect()
}

/// `n` unique pieces over `alphabet`: the letters themselves, then every pair, then every
/// pair followed by a letter. Each multi-letter piece comes with the merge "left right"
/// that builds it from two earlier pieces. Pairs start with the letters of `first` (space
/// and newline stand-ins): llama.cpp looks up whole tokens such as "\n\n" by text
/// (Idefics3's image framing), and real vocabularies all have them.
fn pieces(alphabet: &[char], first: &[char], n: usize) -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = alphabet.iter().take(n).map(|c| c.to_string()).collect();
    let mut merges = Vec::new();
    let mut ordered: Vec<char> = first.to_vec();
    ordered.extend(alphabet.iter().filter(|c| !first.contains(c)));
    let alphabet = &ordered[..];
    let a = alphabet.len();
    let mut level2 = 0;
    'outer: for i in 0..a {
        for j in 0..a {
            if tokens.len() >= n {
                break 'outer;
            }
            tokens.push(format!("{}{}", alphabet[i], alphabet[j]));
            merges.push(format!("{} {}", alphabet[i], alphabet[j]));
            level2 += 1;
        }
    }
    let mut k = 0;
    while tokens.len() < n {
        let (left_idx, c) = (a + k / a, alphabet[k % a]);
        if left_idx >= a + level2 {
            // More pieces than three letters give; never reached for real vocab sizes.
            break;
        }
        let left = tokens[left_idx].clone();
        tokens.push(format!("{left}{c}"));
        merges.push(format!("{left} {c}"));
        k += 1;
    }
    (tokens, merges)
}

/// One token table: strings, types, and (SentencePiece) scores.
struct Table {
    tokens: Vec<String>,
    types: Vec<i32>,
    merges: Vec<String>,
}

impl Table {
    fn id(&self, text: &str) -> u32 {
        self.tokens.iter().position(|t| t == text).unwrap_or(0) as u32
    }
}

fn push(t: &mut Table, text: &str, ty: i32) {
    t.tokens.push(text.to_owned());
    t.types.push(ty);
}

/// Appends byte-level BPE pieces until the table holds `until` tokens.
fn fill_bpe(t: &mut Table, until: usize) {
    let need = until.saturating_sub(t.tokens.len());
    // GPT-2's stand-ins for space, newline and tab.
    let (tokens, merges) = pieces(&byte_chars(), &['Ġ', 'Ċ', 'ĉ'], need);
    for tok in tokens {
        push(t, &tok, NORMAL);
    }
    t.merges = merges;
}

const QWEN_SPECIALS: [(&str, i32); 22] = [
    ("<|endoftext|>", CONTROL),
    ("<|im_start|>", CONTROL),
    ("<|im_end|>", CONTROL),
    ("<|object_ref_start|>", CONTROL),
    ("<|object_ref_end|>", CONTROL),
    ("<|box_start|>", CONTROL),
    ("<|box_end|>", CONTROL),
    ("<|quad_start|>", CONTROL),
    ("<|quad_end|>", CONTROL),
    ("<|vision_start|>", CONTROL),
    ("<|vision_end|>", CONTROL),
    ("<|vision_pad|>", CONTROL),
    ("<|image_pad|>", CONTROL),
    ("<|video_pad|>", CONTROL),
    ("<tool_call>", USER_DEFINED),
    ("</tool_call>", USER_DEFINED),
    ("<|fim_prefix|>", CONTROL),
    ("<|fim_middle|>", CONTROL),
    ("<|fim_suffix|>", CONTROL),
    ("<|fim_pad|>", CONTROL),
    ("<|repo_name|>", CONTROL),
    ("<|file_sep|>", CONTROL),
];
const QWEN3_EXTRA: [&str; 4] = ["<tool_response>", "</tool_response>", "<think>", "</think>"];
const QWEN_AUDIO_SPECIALS: [&str; 6] = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
];
/// Qwen's normal tokens (ids below the first special).
const QWEN_NORMAL: usize = 151_643;

fn qwen_table(kind: VocabKind, n_vocab: usize) -> Table {
    let mut specials: Vec<(&str, i32)> = match kind {
        VocabKind::Qwen2Audio => QWEN_AUDIO_SPECIALS.iter().map(|&s| (s, CONTROL)).collect(),
        _ => QWEN_SPECIALS.to_vec(),
    };
    if kind == VocabKind::Qwen3Vl {
        specials.extend(QWEN3_EXTRA.iter().map(|&s| (s, USER_DEFINED)));
    }
    let n_normal = QWEN_NORMAL.min(n_vocab - specials.len());
    let mut t = Table {
        tokens: Vec::with_capacity(n_vocab),
        types: Vec::with_capacity(n_vocab),
        merges: Vec::new(),
    };
    fill_bpe(&mut t, n_normal);
    for (s, ty) in specials {
        push(&mut t, s, ty);
    }
    // The converter pads to the config's vocab_size with unused `[PAD<id>]` entries.
    while t.tokens.len() < n_vocab {
        let id = t.tokens.len();
        push(&mut t, &format!("[PAD{id}]"), UNUSED);
    }
    t
}

fn tekken_table(n_vocab: usize, audio: bool, tool_args: bool) -> Table {
    let mut t = Table {
        tokens: Vec::with_capacity(n_vocab),
        types: Vec::with_capacity(n_vocab),
        merges: Vec::new(),
    };
    let named = |id: usize| -> Option<&'static str> {
        Some(match id {
            0 => "<unk>",
            1 => "<s>",
            2 => "</s>",
            3 => "[INST]",
            4 => "[/INST]",
            5 => "[AVAILABLE_TOOLS]",
            6 => "[/AVAILABLE_TOOLS]",
            7 => "[TOOL_RESULTS]",
            8 => "[/TOOL_RESULTS]",
            9 => "[TOOL_CALLS]",
            10 => "[IMG]",
            11 => "<pad>",
            12 => "[IMG_BREAK]",
            13 => "[IMG_END]",
            14 => "[PREFIX]",
            15 => "[MIDDLE]",
            16 => "[SUFFIX]",
            17 => "[SYSTEM_PROMPT]",
            18 => "[/SYSTEM_PROMPT]",
            19 => "[TOOL_CONTENT]",
            24 if audio => "[AUDIO]",
            25 if audio => "[BEGIN_AUDIO]",
            32 if tool_args => "[ARGS]",
            33 if tool_args => "[CALL_ID]",
            34 if audio => "[TRANSCRIBE]",
            _ => return None,
        })
    };
    for id in 0..1000 {
        match named(id) {
            Some(s) => push(&mut t, s, CONTROL),
            None => push(&mut t, &format!("<SPECIAL_{id}>"), CONTROL),
        }
    }
    fill_bpe(&mut t, n_vocab);
    t
}

/// SmolLM2's three leading specials, normal tokens, then Idefics3's image tokens last.
fn smollm_table(n_vocab: usize) -> Table {
    let mut t = Table {
        tokens: Vec::with_capacity(n_vocab),
        types: Vec::with_capacity(n_vocab),
        merges: Vec::new(),
    };
    for s in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        push(&mut t, s, CONTROL);
    }
    let mut image: Vec<String> = [
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
        "<global-img>",
    ]
    .map(String::from)
    .to_vec();
    for r in 1..=6 {
        for c in 1..=6 {
            image.push(format!("<row_{r}_col_{c}>"));
        }
    }
    fill_bpe(&mut t, n_vocab - image.len());
    for s in &image {
        push(&mut t, s, CONTROL);
    }
    t
}

/// Gemma 3: SentencePiece pieces with `▁`, byte fallback, control tokens. At the real size
/// the control tokens sit at their real ids; a small vocabulary packs them first.
fn gemma_table(n_vocab: usize) -> (Table, Vec<f32>) {
    const REAL: usize = 262_208;
    let mut t = Table {
        tokens: Vec::with_capacity(n_vocab),
        types: Vec::with_capacity(n_vocab),
        merges: Vec::new(),
    };
    for s in ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "[@BOS@]"] {
        push(&mut t, s, CONTROL);
    }
    let real = n_vocab == REAL;
    if real {
        for i in 0..99 {
            push(&mut t, &format!("<unused{i}>"), CONTROL);
        }
    }
    push(&mut t, "<start_of_turn>", CONTROL);
    push(&mut t, "<end_of_turn>", CONTROL);
    let late: Vec<(usize, &str)> = if real {
        vec![
            (255_999, "<start_of_image>"),
            (256_000, "<end_of_image>"),
            (262_144, "<image_soft_token>"),
        ]
    } else {
        for s in ["<start_of_image>", "<end_of_image>", "<image_soft_token>"] {
            push(&mut t, s, CONTROL);
        }
        Vec::new()
    };
    for b in 0..256 {
        push(&mut t, &format!("<0x{b:02X}>"), BYTE);
    }
    let mut alphabet: Vec<char> = vec!['▁', '\n'];
    alphabet.extend((33u8..=126).map(char::from));
    // Latin-1 letters and more widen the alphabet so three-letter pieces suffice.
    alphabet.extend((0xC0u32..0x250).filter_map(char::from_u32));
    let n_pieces = n_vocab - t.tokens.len() - late.len() - if real { 63 } else { 0 };
    let (pieces, _) = pieces(&alphabet, &['▁', '\n'], n_pieces);
    let mut scores = vec![-1000.0f32; t.tokens.len()];
    let mut pieces = pieces.into_iter().enumerate();
    while t.tokens.len() < n_vocab {
        let id = t.tokens.len();
        if let Some(&(_, s)) = late.iter().find(|(i, _)| *i == id) {
            push(&mut t, s, CONTROL);
            scores.push(-1000.0);
        } else if let Some((rank, p)) = pieces.next() {
            push(&mut t, &p, NORMAL);
            scores.push(-(rank as f32));
        } else {
            push(&mut t, &format!("<unused{}>", id), CONTROL);
            scores.push(-1000.0);
        }
    }
    (t, scores)
}

fn strings(items: Vec<String>) -> Value {
    Value::Array(Array {
        elem_type: ValueType::String,
        items: items.into_iter().map(Value::String).collect(),
    })
}

fn i32s(items: &[i32]) -> Value {
    Value::Array(Array {
        elem_type: ValueType::I32,
        items: items.iter().map(|&v| Value::I32(v)).collect(),
    })
}

/// The `tokenizer.*` keys, in the order the converter writes them for this family.
pub fn tokenizer_kvs(kind: VocabKind, n_vocab: usize, template: &str) -> Vec<(String, Value)> {
    let s = |v: &str| Value::String(v.to_owned());
    let mut kv: Vec<(&str, Value)> = Vec::new();
    match kind {
        VocabKind::Gemma3 => {
            let (t, scores) = gemma_table(n_vocab);
            kv.push(("tokenizer.ggml.model", s("llama")));
            kv.push(("tokenizer.ggml.pre", s("default")));
            kv.push(("tokenizer.ggml.tokens", strings(t.tokens)));
            kv.push((
                "tokenizer.ggml.scores",
                Value::Array(Array {
                    elem_type: ValueType::F32,
                    items: scores.into_iter().map(Value::F32).collect(),
                }),
            ));
            kv.push(("tokenizer.ggml.token_type", i32s(&t.types)));
            kv.push(("tokenizer.ggml.bos_token_id", Value::U32(2)));
            kv.push(("tokenizer.ggml.eos_token_id", Value::U32(1)));
            kv.push(("tokenizer.ggml.unknown_token_id", Value::U32(3)));
            kv.push(("tokenizer.ggml.padding_token_id", Value::U32(0)));
            kv.push(("tokenizer.ggml.mask_token_id", Value::U32(4)));
            kv.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
            kv.push(("tokenizer.ggml.add_sep_token", Value::Bool(false)));
            kv.push(("tokenizer.chat_template", s(template)));
            kv.push(("tokenizer.ggml.add_space_prefix", Value::Bool(false)));
        }
        VocabKind::Qwen2Vl | VocabKind::Qwen3Vl | VocabKind::Qwen2Audio => {
            let t = qwen_table(kind, n_vocab);
            let (eos, pad) = (t.id("<|im_end|>"), t.id("<|endoftext|>"));
            kv.push(("tokenizer.ggml.model", s("gpt2")));
            kv.push(("tokenizer.ggml.pre", s("qwen2")));
            kv.push(("tokenizer.ggml.tokens", strings(t.tokens)));
            kv.push(("tokenizer.ggml.token_type", i32s(&t.types)));
            kv.push(("tokenizer.ggml.merges", strings(t.merges)));
            kv.push(("tokenizer.ggml.eos_token_id", Value::U32(eos)));
            kv.push(("tokenizer.ggml.padding_token_id", Value::U32(pad)));
            kv.push(("tokenizer.ggml.bos_token_id", Value::U32(pad)));
            kv.push(("tokenizer.ggml.add_bos_token", Value::Bool(false)));
            kv.push(("tokenizer.ggml.add_eos_token", Value::Bool(false)));
            kv.push(("tokenizer.chat_template", s(template)));
        }
        VocabKind::Tekken {
            pre,
            audio,
            tool_args,
        } => {
            let t = tekken_table(n_vocab, audio, tool_args);
            kv.push(("tokenizer.ggml.model", s("gpt2")));
            kv.push(("tokenizer.ggml.pre", s(pre)));
            let n = t.tokens.len();
            let (tokens, types, merges) = (strings(t.tokens), i32s(&t.types), strings(t.merges));
            if audio {
                // Voxtral's converter path writes merges first and i32 scores.
                kv.push(("tokenizer.ggml.merges", merges));
                kv.extend(ids_tekken());
                kv.push(("tokenizer.ggml.tokens", tokens));
                kv.push(("tokenizer.ggml.scores", i32s(&vec![0; n])));
                kv.push(("tokenizer.ggml.token_type", types));
                kv.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
            } else {
                kv.push(("tokenizer.ggml.tokens", tokens));
                kv.push(("tokenizer.ggml.token_type", types));
                kv.push(("tokenizer.ggml.merges", merges));
                kv.extend(ids_tekken());
                kv.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
                kv.push(("tokenizer.ggml.add_sep_token", Value::Bool(false)));
            }
            kv.push(("tokenizer.ggml.add_eos_token", Value::Bool(false)));
            kv.push(("tokenizer.chat_template", s(template)));
        }
        VocabKind::SmolLm => {
            let t = smollm_table(n_vocab);
            let eos = t.id("<end_of_utterance>");
            kv.push(("tokenizer.ggml.model", s("gpt2")));
            kv.push(("tokenizer.ggml.pre", s("smollm")));
            kv.push(("tokenizer.ggml.tokens", strings(t.tokens)));
            kv.push(("tokenizer.ggml.token_type", i32s(&t.types)));
            kv.push(("tokenizer.ggml.merges", strings(t.merges)));
            kv.push(("tokenizer.ggml.bos_token_id", Value::U32(1)));
            kv.push(("tokenizer.ggml.eos_token_id", Value::U32(eos)));
            kv.push(("tokenizer.ggml.unknown_token_id", Value::U32(0)));
            kv.push(("tokenizer.ggml.padding_token_id", Value::U32(0)));
            kv.push(("tokenizer.ggml.add_bos_token", Value::Bool(false)));
            kv.push(("tokenizer.ggml.add_eos_token", Value::Bool(false)));
            kv.push(("tokenizer.chat_template", s(template)));
        }
    }
    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn ids_tekken() -> Vec<(&'static str, Value)> {
    vec![
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.padding_token_id", Value::U32(11)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_unique_and_merges_build_them() {
        let (tokens, merges) = pieces(&byte_chars(), &['Ġ', 'Ċ'], 70_000);
        assert_eq!(tokens.len(), 70_000);
        let set: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(set.len(), tokens.len());
        assert_eq!(merges.len(), 70_000 - 256);
        for (m, t) in merges.iter().zip(&tokens[256..]) {
            let (l, r) = m.split_once(' ').unwrap();
            assert_eq!(format!("{l}{r}"), *t);
            assert!(set.contains(&l.to_string()) && set.contains(&r.to_string()));
        }
    }

    #[test]
    fn real_size_tables_put_specials_at_real_ids() {
        let t = qwen_table(VocabKind::Qwen2Vl, 151_936);
        assert_eq!(t.tokens.len(), 151_936);
        assert_eq!(t.id("<|endoftext|>"), 151_643);
        assert_eq!(t.id("<|im_end|>"), 151_645);
        assert_eq!(t.id("<|image_pad|>"), 151_655);
        let s = smollm_table(49_280);
        for whole in ["Ċ", "ĊĊ", "ĠĠ", "Ġa"] {
            assert!(s.tokens.iter().any(|t| t == whole), "{whole}");
        }
        let (g, scores) = gemma_table(262_208);
        assert_eq!((g.tokens.len(), scores.len()), (262_208, 262_208));
        assert_eq!(g.id("<end_of_turn>"), 106);
        assert_eq!(g.id("<start_of_image>"), 255_999);
        assert_eq!(g.id("<image_soft_token>"), 262_144);
        let set: std::collections::HashSet<_> = g.tokens.iter().collect();
        assert_eq!(set.len(), g.tokens.len());
    }
}
