//! The reader against the llama.cpp-made fixtures under tests/fixtures/.

use std::path::{Path, PathBuf};

use gguf::{GgmlType, GgufFile, Value, ValueType};

fn fixtures() -> PathBuf {
    testkit::fixture("")
}

fn all_ggufs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_ggufs(&path, out);
        } else if path.extension().is_some_and(|e| e == "gguf") {
            out.push(path);
        }
    }
}

fn reference() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("quants/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn quants_header_and_tensor_table_match_reference() {
    let file = GgufFile::open(fixtures().join("quants/quants.gguf")).unwrap();
    let reference = reference();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), 32);
    assert_eq!(
        file.data_offset(),
        reference["data_section_offset"].as_u64().unwrap()
    );
    let tensors = reference["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), tensors.len());
    for (info, expected) in file.tensors().iter().zip(tensors) {
        assert_eq!(info.name, expected["name"].as_str().unwrap());
        assert_eq!(
            info.ggml_type.name(),
            expected["ggml_type"].as_str().unwrap()
        );
        let ne: Vec<u64> = expected["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(info.dims, ne, "{}", info.name);
        assert_eq!(info.n_bytes, expected["n_bytes"].as_u64().unwrap());
        assert_eq!(info.offset, expected["data_offset"].as_u64().unwrap());
        let shape: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        assert_eq!(info.shape(), shape);
        assert_eq!(file.tensor_data(info).len() as u64, info.n_bytes);
        assert_eq!(file.tensor(&info.name), Some(info));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares one parsed value with reference.json's `value` (+ `bits` / `utf8_hex`).
fn check_scalar(key: &str, ty: &str, got: &Value, want: &serde_json::Value) {
    let msg = format!("key {key}: {got:?} vs {want}");
    match (ty, got) {
        ("u8", Value::U8(v)) => assert_eq!(u64::from(*v), want.as_u64().unwrap(), "{msg}"),
        ("u16", Value::U16(v)) => assert_eq!(u64::from(*v), want.as_u64().unwrap(), "{msg}"),
        ("u32", Value::U32(v)) => assert_eq!(u64::from(*v), want.as_u64().unwrap(), "{msg}"),
        ("u64", Value::U64(v)) => assert_eq!(*v, want.as_u64().unwrap(), "{msg}"),
        ("i8", Value::I8(v)) => assert_eq!(i64::from(*v), want.as_i64().unwrap(), "{msg}"),
        ("i16", Value::I16(v)) => assert_eq!(i64::from(*v), want.as_i64().unwrap(), "{msg}"),
        ("i32", Value::I32(v)) => assert_eq!(i64::from(*v), want.as_i64().unwrap(), "{msg}"),
        ("i64", Value::I64(v)) => assert_eq!(*v, want.as_i64().unwrap(), "{msg}"),
        ("f32", Value::F32(v)) => assert_eq!(*v, want.as_f64().unwrap() as f32, "{msg}"),
        ("f64", Value::F64(v)) => assert_eq!(*v, want.as_f64().unwrap(), "{msg}"),
        ("bool", Value::Bool(v)) => assert_eq!(*v, want.as_bool().unwrap(), "{msg}"),
        ("str", Value::String(v)) => assert_eq!(v, want.as_str().unwrap(), "{msg}"),
        _ => panic!("type mismatch: {msg} (reference type {ty})"),
    }
}

#[test]
fn quants_metadata_matches_reference() {
    let file = GgufFile::open(fixtures().join("quants/quants.gguf")).unwrap();
    let reference = reference();
    let kvs = reference["metadata"].as_array().unwrap();
    assert_eq!(file.metadata().len(), kvs.len());
    for ((key, value), expected) in file.metadata().iter().zip(kvs) {
        assert_eq!(key, expected["key"].as_str().unwrap());
        let ty = expected["type"].as_str().unwrap();
        if let Some(bits) = expected.get("bits").and_then(|b| b.as_str()) {
            let bits = u64::from_str_radix(bits.trim_start_matches("0x"), 16).unwrap();
            match value {
                Value::F32(v) => assert_eq!(u64::from(v.to_bits()), bits, "{key}"),
                Value::F64(v) => assert_eq!(v.to_bits(), bits, "{key}"),
                other => panic!("{key}: {other:?} has bits"),
            }
        }
        if let Some(h) = expected.get("utf8_hex").and_then(|b| b.as_str()) {
            assert_eq!(hex(value.as_str().unwrap().as_bytes()), h, "{key}");
        }
        if ty == "array" {
            let array = value.as_array().unwrap();
            let elem = expected["elem_type"].as_str().unwrap();
            let want = expected["value"].as_array().unwrap();
            assert_eq!(array.items.len(), want.len(), "{key}");
            let elem_name = if elem == "str" { "string" } else { elem };
            assert_eq!(array.elem_type.name(), elem_name, "{key}");
            for (got, want) in array.items.iter().zip(want) {
                check_scalar(key, elem, got, want);
            }
        } else {
            check_scalar(key, ty, value, &expected["value"]);
        }
    }
}

#[test]
fn typed_accessors() {
    let file = GgufFile::open(fixtures().join("quants/quants.gguf")).unwrap();
    assert_eq!(
        file.get_str("general.architecture").unwrap(),
        "quantfixture"
    );
    assert_eq!(file.get_u32("fixture.u8").unwrap(), 200);
    assert_eq!(file.get_u64("fixture.u64").unwrap(), u64::MAX);
    assert_eq!(file.get_i32("fixture.i8").unwrap(), -100);
    assert!(file.get_u32("fixture.i8").is_err());
    assert!(file.get_u32("fixture.u64").is_err());
    let err = file.get_u32("fixture.str_ascii").unwrap_err().to_string();
    assert!(
        err.contains("fixture.str_ascii") && err.contains("string"),
        "{err}"
    );
    let err = file.get_u32("nope").unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("missing"), "{err}");
    assert_eq!(file.opt_u32("nope").unwrap(), None);
    assert!(file.get_f32("fixture.f64").is_ok());
    assert_eq!(file.get_f32("fixture.f32").unwrap().to_bits(), 0x40490fdb);
    assert!(file.get_bool("fixture.bool_true").unwrap());
    let arr = file.get_array("fixture.arr_u32").unwrap();
    assert_eq!(arr.elem_type, ValueType::U32);
    assert_eq!(arr.as_u32s().unwrap(), vec![1, 2, 3, u32::MAX]);
    assert_eq!(arr.as_i32s(), None);
    assert_eq!(file.tensor("q4_k.a").unwrap().ggml_type, GgmlType::Q4K);
}

#[test]
fn nested_array_fixture_parses() {
    let file = GgufFile::open(fixtures().join("quants/kv_nested_array.gguf")).unwrap();
    let nested = file.get_array("fixture.nested").unwrap();
    assert_eq!(nested.elem_type, ValueType::Array);
    let inner: Vec<Vec<i32>> = nested
        .items
        .iter()
        .map(|v| v.as_array().unwrap().as_i32s().unwrap())
        .collect();
    assert_eq!(inner, vec![vec![1, 2], vec![3], vec![4, 5, 6]]);
    assert_eq!(file.get_u32("fixture.after").unwrap(), 7);
    assert!(file.tensors().is_empty());
}

#[test]
fn every_fixture_gguf_opens() {
    let mut paths = Vec::new();
    all_ggufs(&fixtures(), &mut paths);
    assert!(paths.len() >= 20, "found only {paths:?}");
    for path in paths {
        let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for t in file.tensors() {
            assert_eq!(file.tensor_data(t).len() as u64, t.n_bytes);
        }
        println!(
            "{}: {} kv, {} tensors",
            path.display(),
            file.metadata().len(),
            file.tensors().len()
        );
    }
}
