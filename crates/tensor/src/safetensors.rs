//! Minimal safetensors reader/writer (the float and plain integer types) for references and dumps.
//!
//! Layout: an 8-byte little-endian header length, a JSON header mapping each tensor name to
//! `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets relative to the end of the
//! header; `__metadata__` is ignored), then the raw little-endian data.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{Result, TensorError};

/// One tensor as stored: dtype name as safetensors spells it (`F32`, `BF16`, `I64`, ...),
/// row-major shape and raw little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct SafeTensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Bytes per element of the dtypes this module reads.
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "U8" | "I8" => 1,
        "F16" | "BF16" | "I16" => 2,
        "F32" | "I32" => 4,
        "F64" | "I64" => 8,
        _ => return None,
    })
}

fn err(msg: impl Into<String>) -> TensorError {
    TensorError::Safetensors(msg.into())
}

impl SafeTensor {
    /// An f32 tensor.
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Self {
        Self {
            dtype: "F32".into(),
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    fn chunks<const N: usize>(&self) -> impl Iterator<Item = [u8; N]> + '_ {
        self.data.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }

    /// Values widened (or, for I64/F64, rounded) to f32. `None` for an unknown dtype.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(match self.dtype.as_str() {
            "F32" => self.chunks().map(f32::from_le_bytes).collect(),
            "F16" => self
                .chunks()
                .map(|b| half::f16::from_le_bytes(b).to_f32())
                .collect(),
            "BF16" => self
                .chunks()
                .map(|b| half::bf16::from_le_bytes(b).to_f32())
                .collect(),
            "F64" => self
                .chunks()
                .map(|b| f64::from_le_bytes(b) as f32)
                .collect(),
            _ => self.to_i64()?.into_iter().map(|v| v as f32).collect(),
        })
    }

    /// Values as f64 (exact for every dtype but I64 past 2^53).
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        match self.dtype.as_str() {
            "F64" => Some(self.chunks().map(f64::from_le_bytes).collect()),
            "F32" | "F16" | "BF16" => Some(self.to_f32()?.into_iter().map(f64::from).collect()),
            _ => Some(self.to_i64()?.into_iter().map(|v| v as f64).collect()),
        }
    }

    /// Integer values, exactly. `None` for float dtypes.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match self.dtype.as_str() {
            "U8" => self.data.iter().map(|&b| i64::from(b)).collect(),
            "I8" => self.data.iter().map(|&b| i64::from(b as i8)).collect(),
            "I16" => self
                .chunks()
                .map(|b| i16::from_le_bytes(b).into())
                .collect(),
            "I32" => self
                .chunks()
                .map(|b| i32::from_le_bytes(b).into())
                .collect(),
            "I64" => self.chunks().map(i64::from_le_bytes).collect(),
            _ => return None,
        })
    }
}

/// Reads every tensor of a safetensors file.
pub fn read(path: impl AsRef<Path>) -> Result<BTreeMap<String, SafeTensor>> {
    let path = path.as_ref();
    let bytes =
        std::fs::read(path).map_err(|e| err(format!("cannot read {}: {e}", path.display())))?;
    from_bytes(&bytes).map_err(|e| match e {
        TensorError::Safetensors(msg) => err(format!("{}: {msg}", path.display())),
        other => other,
    })
}

/// Parses a whole safetensors file held in memory.
pub fn from_bytes(bytes: &[u8]) -> Result<BTreeMap<String, SafeTensor>> {
    let len_bytes: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            err(format!(
                "file of {} bytes has no 8-byte header length",
                bytes.len()
            ))
        })?;
    let header_len = u64::from_le_bytes(len_bytes);
    let available = bytes.len() as u64 - 8;
    if header_len > available {
        return Err(err(format!(
            "header length {header_len} exceeds the {available} bytes after it"
        )));
    }
    let header_end = 8 + header_len as usize;
    let data = &bytes[header_end..];
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..header_end])
            .map_err(|e| err(format!("header is not a JSON object: {e}")))?;

    let mut out = BTreeMap::new();
    for (name, entry) in &header {
        if name == "__metadata__" {
            continue;
        }
        out.insert(name.clone(), read_entry(name, entry, data)?);
    }
    Ok(out)
}

fn read_entry(name: &str, entry: &serde_json::Value, data: &[u8]) -> Result<SafeTensor> {
    let bad = |what: &str| err(format!("tensor '{name}': {what}"));
    let dtype = entry["dtype"]
        .as_str()
        .ok_or_else(|| bad("missing string \"dtype\""))?;
    let elem = dtype_size(dtype).ok_or_else(|| bad(&format!("unsupported dtype {dtype}")))?;
    let shape = entry["shape"]
        .as_array()
        .ok_or_else(|| bad("missing array \"shape\""))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| bad("shape entries must be non-negative integers"))?;
    let offsets = entry["data_offsets"]
        .as_array()
        .filter(|o| o.len() == 2)
        .and_then(|o| Some((o[0].as_u64()?, o[1].as_u64()?)))
        .ok_or_else(|| bad("\"data_offsets\" must be two non-negative integers"))?;
    let (begin, end) = offsets;
    if begin > end || end > data.len() as u64 {
        return Err(bad(&format!(
            "data_offsets [{begin}, {end}) outside the {} data bytes",
            data.len()
        )));
    }
    let needed = shape
        .iter()
        .try_fold(elem, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(&format!("shape {shape:?} overflows")))?;
    if needed as u64 != end - begin {
        return Err(bad(&format!(
            "{dtype} {shape:?} needs {needed} bytes, data_offsets give {}",
            end - begin
        )));
    }
    Ok(SafeTensor {
        dtype: dtype.to_owned(),
        shape,
        data: data[begin as usize..end as usize].to_vec(),
    })
}

/// Serialises tensors (in the given order) into a safetensors file image.
pub fn to_bytes(tensors: &[(&str, &SafeTensor)]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, t) in tensors {
        let elem = dtype_size(&t.dtype)
            .ok_or_else(|| err(format!("tensor '{name}': unsupported dtype {}", t.dtype)))?;
        let needed = t.shape.iter().try_fold(elem, |a, &d| a.checked_mul(d));
        if needed != Some(t.data.len()) {
            return Err(err(format!(
                "tensor '{name}': {} {:?} does not match {} data bytes",
                t.dtype,
                t.shape,
                t.data.len()
            )));
        }
        if header.contains_key(*name) {
            return Err(err(format!("duplicate tensor name '{name}'")));
        }
        header.insert(
            (*name).to_owned(),
            serde_json::json!({
                "dtype": t.dtype,
                "shape": t.shape,
                "data_offsets": [offset, offset + t.data.len()],
            }),
        );
        offset += t.data.len();
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| err(e.to_string()))?;
    // Readers like the data 8-byte aligned; the format pads the header with spaces.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, t) in tensors {
        out.extend_from_slice(&t.data);
    }
    Ok(out)
}

/// Writes tensors of any supported dtype.
pub fn write(path: impl AsRef<Path>, tensors: &[(&str, &SafeTensor)]) -> Result<()> {
    let path = path.as_ref();
    let bytes = to_bytes(tensors)?;
    std::fs::write(path, bytes).map_err(|e| err(format!("cannot write {}: {e}", path.display())))
}

/// Writes f32 tensors: `(name, shape, values)`.
pub fn write_f32(path: impl AsRef<Path>, tensors: &[(&str, &[usize], &[f32])]) -> Result<()> {
    let owned: Vec<SafeTensor> = tensors
        .iter()
        .map(|(_, shape, values)| SafeTensor::from_f32(shape, values))
        .collect();
    let named: Vec<(&str, &SafeTensor)> = tensors.iter().map(|t| t.0).zip(&owned).collect();
    write(path, &named)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_round_trip_keeps_bits() {
        let values = [
            1.5f32,
            -0.0,
            f32::INFINITY,
            f32::MIN_POSITIVE / 2.0,
            3.0,
            -7.25,
        ];
        let dir = std::env::temp_dir().join(format!("st_rt_{}", std::process::id()));
        write_f32(&dir, &[("a.b", &[2, 3], &values), ("s", &[], &[4.0])]).unwrap();
        let read_back = read(&dir).unwrap();
        std::fs::remove_file(&dir).ok();
        let a = &read_back["a.b"];
        assert_eq!(a.shape, vec![2, 3]);
        let got = a.to_f32().unwrap();
        assert!(
            got.iter()
                .zip(&values)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        assert_eq!(read_back["s"].to_f32().unwrap(), vec![4.0]);
    }

    #[test]
    fn other_dtypes_convert() {
        let t = SafeTensor {
            dtype: "BF16".into(),
            shape: vec![2],
            data: vec![0x80, 0x3f, 0x00, 0xc0],
        };
        assert_eq!(t.to_f32().unwrap(), vec![1.0, -2.0]);
        let t = SafeTensor {
            dtype: "I16".into(),
            shape: vec![1],
            data: (-300i16).to_le_bytes().to_vec(),
        };
        assert_eq!(t.to_i64().unwrap(), vec![-300]);
        assert_eq!(t.to_f32().unwrap(), vec![-300.0]);
        let bytes = to_bytes(&[("t", &t)]).unwrap();
        assert_eq!(from_bytes(&bytes).unwrap()["t"], t);
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = to_bytes(&[("x", &SafeTensor::from_f32(&[2], &[1.0, 2.0]))]).unwrap();
        for len in 0..good.len() {
            assert!(from_bytes(&good[..len]).is_err(), "truncated to {len}");
        }
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(from_bytes(&huge).is_err());
        let header = |h: &str| {
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(h.as_bytes());
            b.extend_from_slice(&[0u8; 16]);
            b
        };
        let cases = [
            r#"{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#,
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[8,40]}}"#,
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
            r#"{"x":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}"#,
            r#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            r#"{"x":{"dtype":"U8","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#,
            r#"{"x":{"dtype":"F32","shape":[1]}}"#,
            r#"[1,2]"#,
        ];
        for h in cases {
            let e = from_bytes(&header(h)).unwrap_err();
            assert!(matches!(e, TensorError::Safetensors(_)), "{h}: {e}");
        }
        let ok =
            r#"{"__metadata__":{"a":"b"},"x":{"dtype":"U8","shape":[2,2],"data_offsets":[0,4]}}"#;
        assert_eq!(from_bytes(&header(ok)).unwrap()["x"].shape, vec![2, 2]);
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    #[test]
    fn reads_the_quants_reference() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quants");
        let tensors = read(dir.join("reference.safetensors")).unwrap();
        assert_eq!(tensors.len(), 62);
        assert_eq!(tensors["q4_k.a"].shape, vec![3, 768]);
        assert_eq!(tensors["q4_k.a"].dtype, "F32");
        assert_eq!(tensors["i64.a"].dtype, "I64");
        assert_eq!(tensors["i64.a"].to_i64().unwrap().len(), 30);
    }
}
