//! A corpus of broken files, derived from a valid one: every case must be an `Err` that
//! names a byte offset, never a panic.

use gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, MappedBytes, Value, ValueType};

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(MappedBytes::from_vec(bytes.to_vec()))
}

/// A small valid file with every value type, arrays, strings and two tensors.
fn base_writer() -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("test".into()));
    w.add_kv("t.u8", Value::U8(1));
    w.add_kv("t.i8", Value::I8(-1));
    w.add_kv("t.u16", Value::U16(2));
    w.add_kv("t.i16", Value::I16(-2));
    w.add_kv("t.u32", Value::U32(3));
    w.add_kv("t.i32", Value::I32(-3));
    w.add_kv("t.u64", Value::U64(4));
    w.add_kv("t.i64", Value::I64(-4));
    w.add_kv("t.f32", Value::F32(0.5));
    w.add_kv("t.f64", Value::F64(0.25));
    w.add_kv("t.bool", Value::Bool(true));
    w.add_kv("t.str", Value::String("héllo".into()));
    w.add_kv(
        "t.arr",
        Value::Array(Array::new(ValueType::U8, vec![Value::U8(7), Value::U8(8)])),
    );
    w.add_kv(
        "t.strs",
        Value::Array(Array::new(
            ValueType::String,
            vec![Value::String("ab".into()), Value::String(String::new())],
        )),
    );
    w.add_kv("dup.a", Value::U32(1));
    w.add_kv("dup.b", Value::U32(2));
    w.add_kv("bad.XX", Value::String("YY".into()));
    w.add_tensor("tensor.one", GgmlType::F32, &[4, 2], &[0u8; 32]);
    w.add_tensor("tensor.two", GgmlType::Q4_0, &[32], &[0u8; 18]);
    w
}

fn base() -> Vec<u8> {
    base_writer().to_bytes()
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in file", String::from_utf8_lossy(needle)))
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Position right after a key or tensor name (its string bytes).
fn after(bytes: &[u8], name: &str) -> usize {
    find(bytes, name.as_bytes()) + name.len()
}

fn expect_err(name: &str, bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(_) => panic!("{name}: parsed without error"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("byte"), "{name}: message has no offset: {msg}");
            assert!(e.offset().is_some(), "{name}");
            println!("{name}: {msg}");
            e
        }
    }
}

/// Named broken variants of the base file.
fn corpus() -> Vec<(String, Vec<u8>)> {
    let b = base();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut case = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = b.clone();
        f(&mut bytes);
        out.push((name.to_owned(), bytes));
    };
    case("bad magic", &|x| x[0] = b'X');
    case("version 1", &|x| put_u32(x, 4, 1));
    case("version 4", &|x| put_u32(x, 4, 4));
    case("version 0", &|x| put_u32(x, 4, 0));
    case("big-endian version", &|x| put_u32(x, 4, 3u32.swap_bytes()));
    case("tensor count u64::MAX", &|x| put_u64(x, 8, u64::MAX));
    case("tensor count 1e6", &|x| put_u64(x, 8, 1_000_000));
    case("tensor count +1", &|x| put_u64(x, 8, 3));
    case("kv count u64::MAX", &|x| put_u64(x, 16, u64::MAX));
    case("kv count +1", &|x| put_u64(x, 16, 19));
    case("key length u64::MAX", &|x| put_u64(x, 24, u64::MAX));
    case("key length past end", &|x| {
        let len = x.len() as u64;
        put_u64(x, 24, len)
    });
    case("string length u64::MAX", &|x| {
        let at = after(x, "t.str") + 4;
        put_u64(x, at, u64::MAX)
    });
    case("string length 2^40", &|x| {
        let at = after(x, "t.str") + 4;
        put_u64(x, at, 1 << 40)
    });
    case("array count u64::MAX", &|x| {
        let at = after(x, "t.arr") + 8;
        put_u64(x, at, u64::MAX)
    });
    case("string array count huge", &|x| {
        let at = after(x, "t.strs") + 8;
        put_u64(x, at, u64::MAX / 8)
    });
    case("array element string length huge", &|x| {
        let at = after(x, "t.strs") + 16;
        put_u64(x, at, u64::MAX - 3)
    });
    case("unknown value type 13", &|x| {
        let at = after(x, "t.u32");
        put_u32(x, at, 13)
    });
    case("unknown value type u32::MAX", &|x| {
        let at = after(x, "t.u32");
        put_u32(x, at, u32::MAX)
    });
    case("unknown array element type", &|x| {
        let at = after(x, "t.arr") + 4;
        put_u32(x, at, 99)
    });
    case("invalid utf-8 in key", &|x| {
        let at = find(x, b"bad.XX") + 4;
        x[at] = 0xff;
        x[at + 1] = 0xfe;
    });
    case("invalid utf-8 in string value", &|x| {
        let at = find(x, b"YY");
        x[at] = 0xc3;
        x[at + 1] = 0x28;
    });
    case("truncated utf-8 in string value", &|x| {
        // "héllo": replace the continuation byte of the 2-byte é
        let at = find(x, "héllo".as_bytes());
        x[at + 2] = b'e';
    });
    case("invalid utf-8 in tensor name", &|x| {
        let at = find(x, b"tensor.one");
        x[at] = 0x80;
    });
    case("duplicate key", &|x| {
        let at = find(x, b"dup.b");
        x[at + 4] = b'a';
    });
    case("duplicate tensor name", &|x| {
        let at = find(x, b"tensor.two");
        x[at + 7..at + 10].copy_from_slice(b"one");
    });
    case("n_dims 5", &|x| {
        let at = after(x, "tensor.one");
        put_u32(x, at, 5)
    });
    case("n_dims u32::MAX", &|x| {
        let at = after(x, "tensor.one");
        put_u32(x, at, u32::MAX)
    });
    case("negative dim", &|x| {
        let at = after(x, "tensor.one") + 4;
        put_u64(x, at, u64::MAX)
    });
    case("dims product overflows", &|x| {
        let at = after(x, "tensor.one") + 4;
        put_u64(x, at, 1 << 40);
        put_u64(x, at + 8, 1 << 40);
    });
    case("element count past i64", &|x| {
        let at = after(x, "tensor.one") + 4;
        put_u64(x, at, 1 << 62);
        put_u64(x, at + 8, 4);
    });
    case("byte size overflows", &|x| {
        // element count fits in i64, times 4 bytes does not
        let at = after(x, "tensor.one") + 4;
        put_u64(x, at, 1 << 61);
        put_u64(x, at + 8, 2);
    });
    case("dim makes data pass end", &|x| {
        let at = after(x, "tensor.one") + 4;
        put_u64(x, at, 1 << 20);
    });
    case("ne0 not a block multiple", &|x| {
        let at = after(x, "tensor.two") + 4;
        put_u64(x, at, 33)
    });
    case("unknown ggml type 4", &|x| {
        let at = after(x, "tensor.one") + 4 + 16;
        put_u32(x, at, 4)
    });
    case("unknown ggml type 1000", &|x| {
        let at = after(x, "tensor.two") + 4 + 8;
        put_u32(x, at, 1000)
    });
    case("tensor offset past end", &|x| {
        let at = after(x, "tensor.two") + 4 + 8 + 4;
        put_u64(x, at, 1 << 20)
    });
    case("tensor offset u64::MAX rounded to alignment", &|x| {
        let at = after(x, "tensor.two") + 4 + 8 + 4;
        put_u64(x, at, u64::MAX - 31)
    });
    case("tensor offset misaligned", &|x| {
        let at = after(x, "tensor.two") + 4 + 8 + 4;
        put_u64(x, at, 33)
    });
    case("tensor data one byte short", &|x| {
        x.truncate(x.len() - 32 + 17);
    });
    out
}

/// Broken alignments need the KV present, so they are built with the writer.
fn alignment_cases() -> Vec<(String, Vec<u8>)> {
    let values = [
        ("alignment 0", Value::U32(0)),
        ("alignment 3", Value::U32(3)),
        ("alignment 48", Value::U32(48)),
        ("alignment as u64", Value::U64(32)),
        ("alignment as string", Value::String("32".into())),
        ("alignment as i32", Value::I32(32)),
    ];
    values
        .into_iter()
        .map(|(name, v)| {
            let mut w = base_writer();
            w.add_kv("general.alignment", v);
            (name.to_owned(), w.to_bytes())
        })
        .collect()
}

fn nested(depth: usize) -> Value {
    let mut v = Value::Array(Array::new(ValueType::I32, vec![Value::I32(1)]));
    for _ in 1..depth {
        v = Value::Array(Array::new(ValueType::Array, vec![v]));
    }
    v
}

#[test]
fn base_file_is_valid() {
    let file = parse(&base()).unwrap();
    assert_eq!(file.tensors().len(), 2);
    assert_eq!(file.get_str("t.str").unwrap(), "héllo");
}

#[test]
fn every_corpus_case_is_an_error_with_an_offset() {
    let mut cases = corpus();
    cases.extend(alignment_cases());
    for (name, bytes) in &cases {
        expect_err(name, bytes);
    }
}

#[test]
fn error_messages_point_at_the_right_field() {
    let b = base();
    let mut x = b.clone();
    let info = find(&x, b"tensor.two") - 8;
    let at = after(&x, "tensor.two") + 4 + 8 + 4;
    put_u64(&mut x, at, 1 << 20);
    let e = expect_err("offset past end", &x);
    assert_eq!(e.offset(), Some(info as u64));
    let msg = e.to_string();
    assert!(
        msg.contains("'tensor.two'") && msg.contains("extends past end of file"),
        "{msg}"
    );

    let mut x = b.clone();
    let at = after(&x, "t.u32");
    put_u32(&mut x, at, 13);
    assert_eq!(expect_err("type", &x).offset(), Some(at as u64));

    let mut x = b.clone();
    let at = find(&x, b"bad.XX") + 4;
    x[at] = 0xff;
    assert_eq!(expect_err("utf8", &x).offset(), Some(at as u64));
}

#[test]
fn every_truncation_before_the_last_tensor_byte_fails() {
    let b = base();
    let file = parse(&b).unwrap();
    let last = file
        .tensors()
        .iter()
        .map(|t| file.data_offset() + t.offset + t.n_bytes);
    let end = last.max().unwrap() as usize;
    for len in 0..end {
        expect_err(&format!("truncated to {len}"), &b[..len]);
    }
    // Trailing padding after the last tensor is not needed.
    for len in end..=b.len() {
        parse(&b[..len]).unwrap();
    }
}

#[test]
fn truncating_every_corpus_case_never_panics() {
    for (_, bytes) in corpus().iter().chain(&alignment_cases()) {
        for len in 0..bytes.len() {
            let _ = parse(&bytes[..len]);
        }
    }
}

#[test]
fn single_byte_flips_never_panic() {
    let b = base();
    for i in 0..b.len() {
        for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
            let mut x = b.clone();
            x[i] = v;
            let _ = parse(&x);
        }
    }
}

#[test]
fn array_nesting_is_bounded() {
    for depth in 1..=4 {
        let mut w = GgufWriter::new();
        w.add_kv("deep", nested(depth));
        parse(&w.to_bytes()).unwrap_or_else(|e| panic!("depth {depth}: {e}"));
    }
    for depth in [5, 6, 100] {
        let mut w = GgufWriter::new();
        w.add_kv("deep", nested(depth));
        let e = expect_err(&format!("depth {depth}"), &w.to_bytes());
        assert!(matches!(e, GgufError::NestingTooDeep { .. }), "{e}");
    }
}

#[test]
fn empty_arrays_and_files_without_tensors_parse() {
    let mut w = GgufWriter::new();
    w.add_kv("e", Value::Array(Array::new(ValueType::String, vec![])));
    w.add_kv("n", Value::Array(Array::new(ValueType::Array, vec![])));
    let bytes = w.to_bytes();
    let file = parse(&bytes).unwrap();
    assert!(file.get_array("e").unwrap().is_empty());
    // Without tensors the file may end right after the KVs (no padding, no data section):
    // header 24 + two KVs of 8 + 1 (key) + 4 (type) + 4 (elem type) + 8 (count) bytes.
    let kv_end = 24 + 2 * 25;
    assert!(parse(&bytes[..kv_end]).is_ok());
    expect_err("cut inside the last KV", &bytes[..kv_end - 1]);
}

#[test]
fn zero_sized_tensor_at_end_of_file_is_fine() {
    let mut w = GgufWriter::new();
    w.add_tensor("empty", GgmlType::F32, &[0, 3], &[]);
    let file = parse(&w.to_bytes()).unwrap();
    assert_eq!(file.tensors()[0].n_bytes, 0);
    assert_eq!(file.tensor_data(&file.tensors()[0]).len(), 0);
}

#[test]
fn truncated_v2_header_is_an_error() {
    let mut b = base();
    put_u32(&mut b, 4, 2);
    parse(&b).unwrap(); // v2 has the same layout as v3
    expect_err("v2 truncated", &b[..20]);
}

#[test]
fn huge_legal_alignment_allocates_nothing() {
    // 2^31 is a legal u32 power of two. Files are written with 32 and patched, so the
    // writer does not pad by 2 GiB.
    let patch = |w: &GgufWriter| {
        let mut bytes = w.to_bytes();
        let at = after(&bytes, "general.alignment") + 4;
        put_u32(&mut bytes, at, 1 << 31);
        bytes
    };
    // Without tensors the data section may start past the end of the file.
    let mut w = GgufWriter::new();
    w.set_alignment(32);
    let file = parse(&patch(&w)).unwrap();
    assert_eq!(file.alignment(), 1 << 31);
    assert_eq!(file.data_offset(), 1 << 31);
    // With a tensor it cannot hold it.
    let mut w = GgufWriter::new();
    w.set_alignment(32);
    w.add_tensor("t", GgmlType::F32, &[1], &[0; 4]);
    let e = expect_err("alignment 2^31 with a tensor", &patch(&w));
    assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
}
