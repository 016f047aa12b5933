//! The streaming writer: same bytes as the in-memory writer, chunked production, checks.

use gguf::{
    GgmlType, GgufFile, GgufStreamWriter, GgufWriteError, GgufWriter, MappedBytes, StreamError,
    Value,
};

fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 13) as u8
}

#[test]
fn streamed_file_matches_in_memory_writer_and_reads_back() {
    // 3 MiB f16 tensor written in 4099-byte chunks (not a divisor of anything), a q8_0
    // tensor and a tiny f32 one whose size is not a multiple of the alignment.
    let big_dims = [1024u64, 1536];
    let q8_dims = [64u64, 3];
    let small_dims = [5u64];
    let big: Vec<u8> = (0..1024 * 1536 * 2).map(pattern).collect();
    let q8: Vec<u8> = (0..2 * 3 * 34).map(|i| pattern(i + 7)).collect();
    let small: Vec<u8> = (0..20).map(|i| pattern(i + 99)).collect();

    let mut mem = GgufWriter::new();
    mem.add_kv("general.architecture", Value::String("test".into()));
    mem.set_alignment(64);
    mem.add_tensor("small", GgmlType::F32, &small_dims, &small);
    mem.add_tensor("big", GgmlType::F16, &big_dims, &big);
    mem.add_tensor("q8", GgmlType::Q8_0, &q8_dims, &q8);
    let expected = mem.to_bytes();

    let mut st = GgufStreamWriter::new();
    st.add_kv("general.architecture", Value::String("test".into()));
    st.set_alignment(64);
    st.add_tensor("small", GgmlType::F32, &small_dims).unwrap();
    st.add_tensor("big", GgmlType::F16, &big_dims).unwrap();
    st.add_tensor("q8", GgmlType::Q8_0, &q8_dims).unwrap();
    assert_eq!(st.data_bytes(), (big.len() + q8.len() + small.len()) as u64);
    let sources = [&small, &big, &q8];
    let mut out = Vec::new();
    let n = st
        .write(&mut out, |i, t, sink| {
            assert_eq!(t.n_bytes, sources[i].len() as u64);
            for chunk in sources[i].chunks(4099) {
                sink.write(chunk)?;
            }
            assert_eq!(sink.remaining(), 0);
            Ok(())
        })
        .unwrap();
    assert_eq!(n, out.len() as u64);
    assert_eq!(out, expected);

    let file = GgufFile::from_bytes(MappedBytes::from_vec(out)).unwrap();
    assert_eq!(file.alignment(), 64);
    for (name, data) in [("small", &small), ("big", &big), ("q8", &q8)] {
        let info = file.tensor(name).unwrap();
        assert_eq!(info.offset % 64, 0, "{name} is aligned");
        assert_eq!(&*file.tensor_data(info), data.as_slice());
    }
}

#[test]
fn write_file_goes_through_a_part_file_and_errors_are_typed() {
    let dir = std::env::temp_dir().join(format!("gguf-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut st = GgufStreamWriter::new();
    st.add_tensor("t", GgmlType::F32, &[8, 2]).unwrap();
    let path = dir.join("ok.gguf");
    let n = st
        .write_file(&path, |_, t, sink| {
            sink.write(&vec![0u8; t.n_bytes as usize])
        })
        .unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), n);
    assert!(!dir.join("ok.gguf.part").exists());

    // Too few bytes: the file is not left behind.
    let short = dir.join("short.gguf");
    let err = st
        .write_file(&short, |_, _, sink| sink.write(&[0; 4]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            GgufWriteError::WrongLength {
                expected: 64,
                written: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(!short.exists() && !dir.join("short.gguf.part").exists());

    // Too many bytes: refused by the sink, reported as the producer's error.
    let mut out = Vec::new();
    let err = st
        .write(&mut out, |_, _, sink| sink.write(&[0; 65]))
        .unwrap_err();
    assert!(matches!(
        err,
        StreamError::Tensor(GgufWriteError::Produce { .. })
    ));

    // Partial q8_0 blocks are refused when declared.
    let err = GgufStreamWriter::new()
        .add_tensor("q", GgmlType::Q8_0, &[48, 2])
        .err()
        .unwrap();
    assert!(matches!(err, GgufWriteError::PartialBlock { ne0: 48, .. }));

    // An unwritable destination names the path.
    let err = st
        .write_file(dir.join("no/such/dir/x.gguf"), |_, _, _| Ok(()))
        .unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
