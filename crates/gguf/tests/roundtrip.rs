//! Writer -> reader round trips over random metadata and tensors.

use gguf::{Array, GgmlType, GgufFile, GgufWriter, MappedBytes, Value, ValueType};
use proptest::prelude::*;

fn scalar(ty: ValueType) -> BoxedStrategy<Value> {
    match ty {
        ValueType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        ValueType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        ValueType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        ValueType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        ValueType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        ValueType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        ValueType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        ValueType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        // Raw bits: every pattern incl. NaNs, infinities, subnormals, -0.
        ValueType::F32 => any::<u32>()
            .prop_map(|b| Value::F32(f32::from_bits(b)))
            .boxed(),
        ValueType::F64 => any::<u64>()
            .prop_map(|b| Value::F64(f64::from_bits(b)))
            .boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        // Any Unicode, incl. NUL, multi-byte and 4-byte characters.
        ValueType::String => ".{0,12}".prop_map(Value::String).boxed(),
        ValueType::Array => unreachable!("arrays are built by `value`"),
    }
}

fn scalar_type() -> impl Strategy<Value = ValueType> {
    prop::sample::select(
        ValueType::ALL
            .iter()
            .copied()
            .filter(|&t| t != ValueType::Array)
            .collect::<Vec<_>>(),
    )
}

fn array_of(elem: ValueType) -> BoxedStrategy<Value> {
    prop::collection::vec(scalar(elem), 0..8)
        .prop_map(move |items| Value::Array(Array::new(elem, items)))
        .boxed()
}

fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => scalar_type().prop_flat_map(scalar),
        2 => scalar_type().prop_flat_map(array_of),
        // arrays of arrays (the spec allows them; the reader parses a few levels)
        1 => scalar_type().prop_flat_map(|t| {
            prop::collection::vec(array_of(t), 0..3)
                .prop_map(|items| Value::Array(Array::new(ValueType::Array, items)))
        }),
    ]
    .boxed()
}

/// Float-aware equality: NaN payloads compare by bits.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::F32(x), Value::F32(y)) => x.to_bits() == y.to_bits(),
        (Value::F64(x), Value::F64(y)) => x.to_bits() == y.to_bits(),
        (Value::Array(x), Value::Array(y)) => {
            x.elem_type == y.elem_type
                && x.items.len() == y.items.len()
                && x.items.iter().zip(&y.items).all(|(a, b)| same(a, b))
        }
        _ => a == b,
    }
}

const TENSOR_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::IQ4NL,
    GgmlType::I8,
    GgmlType::F64,
];

/// (type, ne, data)
fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, Vec<u8>)> {
    (
        prop::sample::select(TENSOR_TYPES),
        1u64..4,
        prop::collection::vec(1u64..4, 0..4),
    )
        .prop_flat_map(|(ty, blocks, outer)| {
            let mut dims = vec![blocks * ty.block_size() as u64];
            dims.extend(outer);
            let n_bytes = ty.row_bytes(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
            prop::collection::vec(any::<u8>(), n_bytes as usize)
                .prop_map(move |data| (ty, dims.clone(), data))
        })
}

proptest! {
    #[test]
    fn written_files_read_back(
        kvs in prop::collection::vec((".{0,6}", value()), 0..12),
        tensors in prop::collection::vec(tensor(), 0..5),
        alignment in prop::sample::select(vec![0u64, 1, 8, 32, 64, 256]),
    ) {
        let mut writer = GgufWriter::new();
        // Keys made unique by their index; the random suffix exercises non-ASCII keys.
        let kvs: Vec<(String, Value)> =
            kvs.into_iter().enumerate().map(|(i, (k, v))| (format!("k{i}.{k}"), v)).collect();
        for (k, v) in &kvs {
            writer.add_kv(k, v.clone());
        }
        if alignment != 0 {
            writer.set_alignment(alignment);
        }
        for (i, (ty, dims, data)) in tensors.iter().enumerate() {
            writer.add_tensor(&format!("tensor.{i}"), *ty, dims, data);
        }
        let bytes = writer.to_bytes();
        let file = GgufFile::from_bytes(MappedBytes::from_vec(bytes)).unwrap();
        prop_assert_eq!(file.version(), 3);
        let expected_alignment = if alignment == 0 { 32 } else { alignment };
        prop_assert_eq!(file.alignment(), expected_alignment);
        prop_assert_eq!(file.data_offset() % expected_alignment, 0);
        let expected_len = kvs.len() + usize::from(alignment != 0);
        prop_assert_eq!(file.metadata().len(), expected_len);
        for ((k, v), (got_k, got_v)) in kvs.iter().zip(file.metadata()) {
            prop_assert_eq!(k, got_k);
            prop_assert!(same(v, got_v), "{k}: wrote {v:?}, read {got_v:?}");
        }
        prop_assert_eq!(file.tensors().len(), tensors.len());
        for (info, (ty, dims, data)) in file.tensors().iter().zip(&tensors) {
            prop_assert_eq!(info.ggml_type, *ty);
            prop_assert_eq!(&info.dims, dims);
            prop_assert_eq!(info.offset % expected_alignment, 0);
            prop_assert_eq!(&file.tensor_data(info)[..], &data[..]);
        }
    }
}

#[test]
fn writer_layout_matches_llama_cpp_conventions() {
    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Value::String("llama".into()));
    w.add_tensor("a", GgmlType::F32, &[3], &[0u8; 12]);
    w.add_tensor("b", GgmlType::F32, &[1], &[1u8; 4]);
    let bytes = w.to_bytes();
    assert_eq!(&bytes[..4], b"GGUF");
    assert_eq!(u32::from_le_bytes(bytes[4..8].try_into().unwrap()), 3);
    let file = GgufFile::from_bytes(MappedBytes::from_vec(bytes.clone())).unwrap();
    // Tensors packed in order, each padded to the alignment; the file ends padded too.
    assert_eq!(file.tensors()[0].offset, 0);
    assert_eq!(file.tensors()[1].offset, 32);
    assert_eq!(bytes.len() as u64, file.data_offset() + 64);
}
