//! The rules of the GGUF spec that llama.cpp's loader enforces (ggml/src/gguf.cpp): each
//! broken file is refused with its own typed error, one line naming the rule and the place.

use gguf::{GgmlType, GgufError, GgufFile, GgufWriter, MappedBytes, Value};

fn parse(bytes: &[u8]) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(MappedBytes::from_vec(bytes.to_vec()))
}

fn refuse(bytes: &[u8]) -> GgufError {
    match parse(bytes) {
        Ok(_) => panic!("parsed without error"),
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "more than one line: {msg}");
            assert!(e.offset().is_some(), "no offset: {msg}");
            println!("{msg}");
            e
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in file")
}

/// File position of the data-offset field of the tensor called `name` with `n_dims` dims.
fn offset_field(bytes: &[u8], name: &str, n_dims: usize) -> usize {
    find(bytes, name.as_bytes()) + name.len() + 4 + 8 * n_dims + 4
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn f32_tensors(tensors: &[(&str, u64)]) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("test".into()));
    for &(name, n) in tensors {
        w.add_tensor(name, GgmlType::F32, &[n], &vec![0u8; 4 * n as usize]);
    }
    w
}

#[test]
fn errors_stay_small() {
    // Every error type that wraps a GgufError carries its size.
    assert!(std::mem::size_of::<GgufError>() <= 72);
}

#[test]
fn empty_key_is_refused() {
    let mut w = GgufWriter::new();
    w.add_kv("a", Value::U8(1));
    w.add_kv("", Value::U8(2));
    let bytes = w.to_bytes();
    let e = refuse(&bytes);
    // header 24 + first KV (8 + 1 + 4 + 1)
    assert!(
        matches!(
            e,
            GgufError::EmptyKey {
                offset: 38,
                index: 1
            }
        ),
        "{e}"
    );
}

#[test]
fn duplicate_key_is_refused_and_a_long_one_is_shown_short() {
    let key = "k".repeat(1 << 20);
    // Two KVs with the same 1 MiB key: built by hand, the writer would merge them.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend_from_slice(&3u32.to_le_bytes());
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&2u64.to_le_bytes());
    for v in [1u8, 2] {
        bytes.extend_from_slice(&(key.len() as u64).to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.push(v);
    }
    let e = refuse(&bytes);
    assert!(
        matches!(e, GgufError::DuplicateKey { offset, .. } if offset == 24 + 8 + (1 << 20) + 5)
    );
    assert!(e.to_string().len() < 200, "message not shortened");
    assert!(e.to_string().contains("1048576 bytes"), "{e}");
}

#[test]
fn tensor_names_up_to_63_bytes_are_read_and_longer_ones_refused() {
    let ok = "n".repeat(63);
    let file = parse(&f32_tensors(&[(&ok, 1)]).to_bytes()).unwrap();
    assert_eq!(file.tensors()[0].name, ok);

    let long = "n".repeat(64);
    let e = refuse(&f32_tensors(&[("first", 1), (&long, 1)]).to_bytes());
    assert!(
        matches!(
            e,
            GgufError::NameTooLong {
                index: 1,
                len: 64,
                max: 63,
                ..
            }
        ),
        "{e}"
    );

    let huge = "é".repeat(1 << 19); // 1 MiB, two bytes a character
    let e = refuse(&f32_tensors(&[(&huge, 1)]).to_bytes());
    assert!(
        matches!(e, GgufError::NameTooLong { len: 1_048_576, .. }),
        "{e}"
    );
    assert!(e.to_string().len() < 200, "message not shortened");
}

#[test]
fn duplicate_tensor_names_are_refused() {
    let mut bytes = f32_tensors(&[("aaaa", 8), ("bbbb", 8)]).to_bytes();
    let at = find(&bytes, b"bbbb");
    bytes[at..at + 4].copy_from_slice(b"aaaa");
    let e = refuse(&bytes);
    assert!(
        matches!(e, GgufError::DuplicateTensor { ref name, .. } if name == "aaaa"),
        "{e}"
    );
}

#[test]
fn overlapping_tensor_data_is_refused() {
    let mut bytes =
        f32_tensors(&[("token_embd.weight", 2048), ("blk.0.attn_q.weight", 1024)]).to_bytes();
    let at = offset_field(&bytes, "blk.0.attn_q.weight", 1);
    put_u64(&mut bytes, at, 4096);
    let e = refuse(&bytes);
    assert!(matches!(e, GgufError::TensorOverlap { .. }), "{e}");
    assert!(
        e.to_string().ends_with(
            "tensor 'blk.0.attn_q.weight' data at offset 4096 overlaps 'token_embd.weight' (0..8192)"
        ),
        "{e}"
    );
}

#[test]
fn an_overlap_names_the_tensor_whose_data_it_falls_in() {
    // big [0, 8192), small [8192, 8320); late moved into the middle of big.
    let mut bytes = f32_tensors(&[("big", 2048), ("small", 32), ("late", 32)]).to_bytes();
    let at = offset_field(&bytes, "late", 1);
    put_u64(&mut bytes, at, 4096);
    let e = refuse(&bytes);
    assert!(
        matches!(e, GgufError::TensorOverlap { ref tensor, ref other, .. }
            if tensor == "late" && other.name == "big" && other.end == 8192),
        "{e}"
    );
}

#[test]
fn data_out_of_tensor_info_order_is_refused() {
    let mut bytes = f32_tensors(&[("t_a", 8), ("t_b", 8)]).to_bytes();
    let (at_a, at_b) = (
        offset_field(&bytes, "t_a", 1),
        offset_field(&bytes, "t_b", 1),
    );
    put_u64(&mut bytes, at_a, 32);
    put_u64(&mut bytes, at_b, 0);
    let e = refuse(&bytes);
    assert!(
        matches!(e, GgufError::TensorOutOfPlace { data_offset: 32, expected: 0, ref tensor, .. } if tensor == "t_a"),
        "{e}"
    );
}

#[test]
fn a_gap_between_tensors_is_refused() {
    let mut bytes = f32_tensors(&[("a", 8), ("b", 8)]).to_bytes();
    bytes.extend_from_slice(&[0; 64]);
    let at = offset_field(&bytes, "b", 1);
    put_u64(&mut bytes, at, 64);
    let e = refuse(&bytes);
    assert!(
        matches!(
            e,
            GgufError::TensorOutOfPlace {
                data_offset: 64,
                expected: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn empty_tensors_share_an_offset_with_the_next_one() {
    let mut w = f32_tensors(&[("a", 8)]);
    w.add_tensor("empty", GgmlType::F32, &[0], &[]);
    w.add_tensor("b", GgmlType::F32, &[8], &[0; 32]);
    let file = parse(&w.to_bytes()).unwrap();
    assert_eq!(file.tensor("empty").unwrap().offset, 32);
    assert_eq!(file.tensor("b").unwrap().offset, 32);
}

#[test]
fn misaligned_tensor_offsets_are_refused() {
    let mut bytes = f32_tensors(&[("a", 8), ("b", 8)]).to_bytes();
    let at = offset_field(&bytes, "b", 1);
    put_u64(&mut bytes, at, 40);
    let e = refuse(&bytes);
    assert!(
        matches!(
            e,
            GgufError::MisalignedTensor {
                data_offset: 40,
                alignment: 32,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn alignment_must_be_a_power_of_two() {
    // (The writer pads by whatever it is given, so no huge values here.)
    for bad in [0u32, 3, 24, 96] {
        let mut w = f32_tensors(&[("a", 8)]);
        w.add_kv("general.alignment", Value::U32(bad));
        let e = refuse(&w.to_bytes());
        assert!(matches!(e, GgufError::BadAlignment { .. }), "{bad}: {e}");
    }
    let mut w = f32_tensors(&[("a", 8), ("b", 1)]);
    w.set_alignment(64);
    let file = parse(&w.to_bytes()).unwrap();
    assert_eq!(file.tensor("b").unwrap().offset, 64);
}
