//! Every tensor of `tests/fixtures/quants/quants.gguf`, dequantized, against the values
//! llama.cpp computes (`reference.safetensors`): bit-exact for every type we implement.
//!
//! The GGUF file is sliced with the per-tensor offsets of `reference.json` and the
//! safetensors file is parsed here directly, so this test depends only on
//! `tensor::quant`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use tensor::DType;
use tensor::quant::dequantize;

fn fixture_dir() -> PathBuf {
    testkit::fixture("quants")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A safetensors file: name -> (dtype, bytes).
fn parse_safetensors(bytes: &[u8]) -> BTreeMap<String, (String, Vec<u8>)> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut out = BTreeMap::new();
    for (name, info) in header.as_object().unwrap() {
        if name == "__metadata__" {
            continue;
        }
        let offsets = info["data_offsets"].as_array().unwrap();
        let (start, end) = (
            offsets[0].as_u64().unwrap() as usize,
            offsets[1].as_u64().unwrap() as usize,
        );
        let dtype = info["dtype"].as_str().unwrap().to_string();
        out.insert(name.clone(), (dtype, data[start..end].to_vec()));
    }
    out
}

/// The reference values as f32 (integer / F64 references converted like our dequantizer:
/// nearest f32).
fn reference_values(dtype: &str, bytes: &[u8]) -> Vec<f32> {
    macro_rules! conv {
        ($t:ty, $n:literal) => {
            bytes
                .chunks_exact($n)
                .map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect()
        };
    }
    match dtype {
        "F32" => conv!(f32, 4),
        "F64" => conv!(f64, 8),
        "I8" => conv!(i8, 1),
        "I16" => conv!(i16, 2),
        "I32" => conv!(i32, 4),
        "I64" => conv!(i64, 8),
        other => panic!("unexpected reference dtype {other}"),
    }
}

#[derive(Default)]
struct TypeStats {
    tensors: usize,
    elements: usize,
    mismatches: usize,
    zero_sign_differences: usize,
    subnormals: usize,
}

#[test]
fn every_fixture_tensor_dequantizes_bit_exactly() {
    let meta: Value = serde_json::from_slice(&read("reference.json")).unwrap();
    let gguf = read("quants.gguf");
    let reference = parse_safetensors(&read("reference.safetensors"));
    let data_section = meta["data_section_offset"].as_u64().unwrap_or(4448) as usize;

    let mut stats: BTreeMap<String, TypeStats> = BTreeMap::new();
    let tensors = meta["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 62);
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let type_name = t["ggml_type"].as_str().unwrap();
        let dtype = DType::from_id(t["ggml_type_id"].as_u64().unwrap() as u32)
            .unwrap_or_else(|| panic!("{name}: unknown type id"));
        assert_eq!(dtype.name(), type_name);
        let n_elems: usize = t["ne"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .product();
        let offset = data_section + t["data_offset"].as_u64().unwrap() as usize;
        let n_bytes = t["n_bytes"].as_u64().unwrap() as usize;
        if let Some(file_offset) = t["file_offset"].as_u64() {
            assert_eq!(file_offset as usize, offset, "{name}: offsets disagree");
        }
        let raw = &gguf[offset..offset + n_bytes];

        let mut got = vec![f32::NAN; n_elems];
        dequantize(dtype, raw, &mut got).unwrap_or_else(|e| panic!("{name}: {e}"));

        let (ref_dtype, ref_bytes) = &reference[name];
        let want = reference_values(ref_dtype, ref_bytes);
        assert_eq!(want.len(), n_elems, "{name}: reference size");

        let s = stats.entry(type_name.to_string()).or_default();
        s.tensors += 1;
        s.elements += n_elems;
        for (i, (&a, &b)) in got.iter().zip(&want).enumerate() {
            if a != b {
                if s.mismatches < 5 {
                    eprintln!(
                        "{name}[{i}]: got {a:e} ({:#010x}), want {b:e} ({:#010x})",
                        a.to_bits(),
                        b.to_bits()
                    );
                }
                s.mismatches += 1;
            } else if a.to_bits() != b.to_bits() {
                s.zero_sign_differences += 1;
            }
            if b.is_subnormal() {
                s.subnormals += 1;
            }
        }
    }

    let mut total_elems = 0;
    let mut failed = Vec::new();
    for (ty, s) in &stats {
        total_elems += s.elements;
        if s.mismatches == 0 {
            println!(
                "{ty}: {} elements in {} tensors, exact (zero-sign differences: {}, f32 subnormals: {})",
                s.elements, s.tensors, s.zero_sign_differences, s.subnormals
            );
        } else {
            println!("{ty}: {} of {} elements WRONG", s.mismatches, s.elements);
            failed.push(ty.clone());
        }
    }
    println!(
        "summary: {} tensors, {} types, {total_elems} elements; {} types exact, failed: {failed:?}",
        tensors.len(),
        stats.len(),
        stats.len() - failed.len()
    );
    assert!(failed.is_empty(), "types with mismatches: {failed:?}");
}

#[test]
fn every_block_of_every_fixture_tensor_also_dequantizes_alone() {
    // Row-by-row (one block at a time) must give the same as the whole tensor.
    let meta: Value = serde_json::from_slice(&read("reference.json")).unwrap();
    let gguf = read("quants.gguf");
    let data_section = meta["data_section_offset"].as_u64().unwrap_or(4448) as usize;
    for t in meta["tensors"].as_array().unwrap() {
        let dtype = DType::from_id(t["ggml_type_id"].as_u64().unwrap() as u32).unwrap();
        let offset = data_section + t["data_offset"].as_u64().unwrap() as usize;
        let raw = &gguf[offset..offset + t["n_bytes"].as_u64().unwrap() as usize];
        let n = raw.len() / dtype.type_size() * dtype.block_size();
        let mut whole = vec![0f32; n];
        dequantize(dtype, raw, &mut whole).unwrap();
        for (block, y) in raw
            .chunks_exact(dtype.type_size())
            .zip(whole.chunks_exact(dtype.block_size()))
        {
            let mut one = vec![0f32; dtype.block_size()];
            tensor::quant::dequantize_row(dtype, block, &mut one).unwrap();
            assert!(one.iter().zip(y).all(|(a, b)| a.to_bits() == b.to_bits()));
        }
    }
}
