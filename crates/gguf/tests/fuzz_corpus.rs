//! The fuzz seeds (and regression inputs found by fuzzing) through the parser.

use std::path::{Path, PathBuf};

use gguf::{Array, GgmlType, GgufFile, GgufWriter, MappedBytes, Value, ValueType};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/parse_gguf")
}

#[test]
fn every_corpus_file_parses_or_errors_without_panicking() {
    let entries = std::fs::read_dir(corpus_dir()).expect("fuzz/corpus/parse_gguf exists");
    let mut n = 0;
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        let result = GgufFile::from_bytes(MappedBytes::from_vec(bytes));
        println!(
            "{}: {:?}",
            entry.path().display(),
            result.as_ref().map(|f| f.tensors().len())
        );
        n += 1;
    }
    assert!(n >= 3, "only {n} seeds");
}

/// Small valid files covering every value type, nesting, every tensor type and v2.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut all_values = GgufWriter::new();
    all_values
        .add_kv("general.architecture", Value::String("seed".into()))
        .add_kv("a.u8", Value::U8(200))
        .add_kv("a.i8", Value::I8(-100))
        .add_kv("a.u16", Value::U16(60000))
        .add_kv("a.i16", Value::I16(-30000))
        .add_kv("a.u32", Value::U32(4_000_000_000))
        .add_kv("a.i32", Value::I32(-2_000_000_000))
        .add_kv("a.u64", Value::U64(u64::MAX))
        .add_kv("a.i64", Value::I64(i64::MIN))
        .add_kv("a.f32", Value::F32(f32::NAN))
        .add_kv("a.f64", Value::F64(-0.0))
        .add_kv("a.bool", Value::Bool(true))
        .add_kv("a.str", Value::String("日本語 🦀\0".into()))
        .add_kv(
            "a.strs",
            Value::Array(Array::new(
                ValueType::String,
                vec![Value::String("x".into()), Value::String(String::new())],
            )),
        )
        .add_kv(
            "a.f32s",
            Value::Array(Array::new(
                ValueType::F32,
                vec![Value::F32(1.0), Value::F32(-2.5)],
            )),
        )
        .add_kv("a.empty", Value::Array(Array::new(ValueType::I64, vec![])))
        .add_kv(
            "a.nested",
            Value::Array(Array::new(
                ValueType::Array,
                vec![Value::Array(Array::new(
                    ValueType::U16,
                    vec![Value::U16(1)],
                ))],
            )),
        );

    let mut tensors = GgufWriter::new();
    tensors.add_kv("general.alignment", Value::U32(16));
    for &ty in GgmlType::ALL {
        let ne0 = ty.block_size() as u64;
        let bytes = vec![0x11u8; ty.type_size()];
        tensors.add_tensor(&format!("t.{}", ty.name()), ty, &[ne0], &bytes);
    }

    let mut dims = GgufWriter::new();
    dims.add_tensor("scalar", GgmlType::F32, &[], &[0, 0, 128, 63])
        .add_tensor("empty", GgmlType::F16, &[0, 7], &[])
        .add_tensor("four_d", GgmlType::I8, &[2, 1, 2, 1], &[1, 2, 3, 4]);

    let mut v2 = dims.to_bytes();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());

    vec![
        ("all_values.gguf", all_values.to_bytes()),
        ("every_tensor_type.gguf", tensors.to_bytes()),
        ("dims.gguf", dims.to_bytes()),
        ("v2.gguf", v2),
        ("empty.gguf", GgufWriter::new().to_bytes()),
    ]
}

#[test]
fn seeds_are_valid() {
    for (name, bytes) in seeds() {
        GgufFile::from_bytes(MappedBytes::from_vec(bytes))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Regenerates the seed files: `cargo test -p gguf --test fuzz_corpus -- --ignored`.
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let nested = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/quants/kv_nested_array.gguf");
    std::fs::copy(nested, dir.join("kv_nested_array.gguf")).unwrap();
}
