//! The parser. Every read goes through [`Cursor`], which checks the bytes exist before it
//! touches them; every count is checked against the bytes left before anything is allocated.

use std::collections::HashSet;

use crate::error::TensorSpan;
use crate::value::{Array, Value, ValueType};
use crate::{GgmlType, GgufError, TensorInfo};

pub(crate) const MAGIC: &[u8; 4] = b"GGUF";
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
pub(crate) const ALIGNMENT_KEY: &str = "general.alignment";
/// ggml's GGML_MAX_DIMS.
pub(crate) const MAX_DIMS: u32 = 4;
/// Arrays of arrays are allowed by the spec; deeper than this is treated as hostile.
pub(crate) const MAX_ARRAY_DEPTH: usize = 4;
/// Smallest tensor info: empty name (8) + n_dims (4) + type (4) + offset (8).
const MIN_TENSOR_INFO_SIZE: u64 = 24;
/// Smallest KV: empty key (8) + type (4) + a one-byte value.
const MIN_KV_SIZE: u64 = 13;
/// Longest tensor name llama.cpp's loader takes: ggml's GGML_MAX_NAME is 64 bytes
/// including the terminating NUL.
pub(crate) const MAX_TENSOR_NAME: u64 = 63;
/// Counts are checked against the bytes left, but a count of tiny items in a big file can
/// still ask for many times the file's size in `Value`s up front; beyond this many, vectors
/// grow only as items actually parse.
const MAX_PREALLOC: u64 = 1024;
/// Keys and names in error messages are cut to this many bytes.
const SHOWN_NAME: usize = 64;

type Result<T> = std::result::Result<T, GgufError>;
type Metadata = Vec<(String, Value)>;

fn prealloc<T>(count: u64) -> Vec<T> {
    Vec::with_capacity(count.min(MAX_PREALLOC) as usize)
}

/// A key or name as an error message shows it: whole when short, else its first bytes
/// (cut on a character boundary) and its length.
pub(crate) fn shown(name: &str) -> String {
    if name.len() <= SHOWN_NAME {
        return name.to_owned();
    }
    let mut cut = SHOWN_NAME;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &name[..cut], name.len())
}

/// Everything the header, metadata and tensor infos say, checked against the file length.
pub(crate) struct Parsed {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let available = self.remaining();
        if n > available {
            return Err(GgufError::Truncated {
                offset: self.offset(),
                what: what(),
                needed: n,
                available,
            });
        }
        // n <= remaining, which is a usize
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A u64-length-prefixed UTF-8 string.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let start = self.offset();
        let bytes = self.take(len, what)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(e) => {
                let at = e.valid_up_to();
                let detail = match e.error_len() {
                    Some(_) => format!("byte {:#04x} is not valid there", bytes[at]),
                    None => "it ends inside a multi-byte character".to_owned(),
                };
                Err(GgufError::InvalidUtf8 {
                    offset: start + at as u64,
                    what: what(),
                    detail,
                })
            }
        }
    }

    /// Fails unless `count` items of at least `min_size` bytes each can still fit.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<()> {
        let max = self.remaining() / min_size;
        if count > max {
            return Err(GgufError::CountTooLarge {
                offset: self.offset(),
                what: what(),
                count,
                max,
                available: self.remaining(),
            });
        }
        Ok(())
    }
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Parsed> {
    let mut cur = Cursor { bytes, pos: 0 };
    let magic = cur.array::<4>(&|| "magic".into())?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = cur.u32(&|| "version".into())?;
    // A big-endian writer puts the small version number in the high bytes.
    if version & 0xFFFF == 0 && version != 0 {
        return Err(GgufError::BigEndian { raw: version });
    }
    if version != 2 && version != 3 {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let n_tensors = cur.u64(&|| "tensor count".into())?;
    let n_kv = cur.u64(&|| "metadata count".into())?;
    // The KVs come first, so the tensor count can only be bounded after them; the KV count
    // is bounded now (the tensor infos need room too, but one bound suffices for allocation).
    cur.check_count(n_kv, MIN_KV_SIZE, &|| "metadata key-value".into())?;

    let (metadata, value_offsets) = read_metadata(&mut cur, n_kv)?;
    let alignment = alignment_of(&metadata, &value_offsets)?;

    cur.check_count(n_tensors, MIN_TENSOR_INFO_SIZE, &|| "tensor info".into())?;
    let (tensors, info_offsets) = read_tensor_infos(&mut cur, n_tensors, alignment)?;

    let data_offset = cur
        .offset()
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufError::BadAlignment {
            offset: cur.offset(),
            detail: format!("{alignment} overflows the data section start"),
        })?;
    check_tensor_ranges(&tensors, &info_offsets, data_offset, bytes.len() as u64)?;
    check_no_overlap(&tensors, &info_offsets)?;
    check_placement(&tensors, &info_offsets, alignment)?;
    Ok(Parsed {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

/// The KVs in file order, and the file offset of each value (for later error messages).
fn read_metadata(cur: &mut Cursor, n_kv: u64) -> Result<(Metadata, Vec<u64>)> {
    let mut metadata = prealloc(n_kv);
    let mut value_offsets = prealloc(n_kv);
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let key_offset = cur.offset();
        let key = cur.string(&|| format!("key of metadata entry {i}"))?;
        // llama.cpp asserts (aborts) on an empty key; here it is a file error.
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                offset: key_offset,
                index: i,
            });
        }
        // Keys have no length limit, so messages carry a shortened form.
        let label = shown(&key);
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey {
                offset: key_offset,
                key: label,
            });
        }
        let type_offset = cur.offset();
        let type_id = cur.u32(&|| format!("value type of key '{label}'"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            offset: type_offset,
            key: label.clone(),
            id: type_id,
        })?;
        value_offsets.push(cur.offset());
        let value = read_value(cur, ty, &label, 0)?;
        metadata.push((key, value));
    }
    Ok((metadata, value_offsets))
}

fn read_value(cur: &mut Cursor, ty: ValueType, key: &str, depth: usize) -> Result<Value> {
    let what = || format!("value of key '{key}'");
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array(&what)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(&what)?)),
        // Any non-zero byte is true, as in llama.cpp.
        ValueType::Bool => Value::Bool(cur.array::<1>(&what)?[0] != 0),
        ValueType::String => Value::String(cur.string(&what)?),
        ValueType::Array => Value::Array(read_array(cur, key, depth)?),
    })
}

fn read_array(cur: &mut Cursor, key: &str, depth: usize) -> Result<Array> {
    let type_offset = cur.offset();
    let type_id = cur.u32(&|| format!("array element type of key '{key}'"))?;
    let elem_type = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        offset: type_offset,
        key: key.to_owned(),
        id: type_id,
    })?;
    if elem_type == ValueType::Array && depth + 1 >= MAX_ARRAY_DEPTH {
        return Err(GgufError::NestingTooDeep {
            offset: type_offset,
            key: key.to_owned(),
            max_depth: MAX_ARRAY_DEPTH,
        });
    }
    let count = cur.u64(&|| format!("array length of key '{key}'"))?;
    cur.check_count(count, elem_type.min_encoded_size(), &|| {
        format!("{elem_type} array element of key '{key}'")
    })?;
    let mut items = prealloc(count);
    for _ in 0..count {
        items.push(read_value(cur, elem_type, key, depth + 1)?);
    }
    Ok(Array { elem_type, items })
}

/// `general.alignment`: a non-zero power of two stored as u32, 32 when absent.
fn alignment_of(metadata: &[(String, Value)], value_offsets: &[u64]) -> Result<u64> {
    let Some(index) = metadata.iter().position(|(k, _)| k == ALIGNMENT_KEY) else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let value = &metadata[index].1;
    let offset = value_offsets[index];
    match value {
        Value::U32(a) if *a != 0 && a.is_power_of_two() => Ok(u64::from(*a)),
        Value::U32(a) => Err(GgufError::BadAlignment {
            offset,
            detail: format!("= {a} is not a non-zero power of two"),
        }),
        other => Err(GgufError::BadAlignment {
            offset,
            detail: format!("must be u32, found {}", other.describe()),
        }),
    }
}

/// The tensor infos, and the file offset where each starts (for later error messages).
fn read_tensor_infos(
    cur: &mut Cursor,
    n_tensors: u64,
    alignment: u64,
) -> Result<(Vec<TensorInfo>, Vec<u64>)> {
    let mut tensors = prealloc(n_tensors);
    let mut info_offsets = prealloc(n_tensors);
    let mut seen = HashSet::new();
    for i in 0..n_tensors {
        let info_offset = cur.offset();
        let name = cur.string(&|| format!("name of tensor {i}"))?;
        if name.len() as u64 > MAX_TENSOR_NAME {
            return Err(GgufError::NameTooLong {
                offset: info_offset,
                index: i,
                len: name.len() as u64,
                name: shown(&name),
                max: MAX_TENSOR_NAME,
            });
        }
        if !seen.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor {
                offset: info_offset,
                name,
            });
        }
        let dims_offset = cur.offset();
        let n_dims = cur.u32(&|| format!("n_dims of tensor '{name}'"))?;
        if n_dims > MAX_DIMS {
            return Err(GgufError::TooManyDims {
                offset: dims_offset,
                tensor: name,
                n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims as usize {
            let dim_offset = cur.offset();
            let value = cur.u64(&|| format!("dimension {d} of tensor '{name}'"))?;
            // ggml stores ne as int64
            if value > i64::MAX as u64 {
                return Err(GgufError::NegativeDim {
                    offset: dim_offset,
                    tensor: name,
                    index: d,
                    value,
                });
            }
            dims.push(value);
        }
        let type_offset = cur.offset();
        let type_id = cur.u32(&|| format!("ggml type of tensor '{name}'"))?;
        let Some(ggml_type) = GgmlType::from_id(type_id) else {
            return Err(GgufError::UnknownGgmlType {
                offset: type_offset,
                tensor: name,
                id: type_id,
            });
        };
        let n_bytes = tensor_bytes(ggml_type, &dims, &name, dims_offset)?;
        let data_offset_at = cur.offset();
        let offset = cur.u64(&|| format!("data offset of tensor '{name}'"))?;
        if !offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedTensor {
                offset: data_offset_at,
                tensor: name,
                data_offset: offset,
                alignment,
            });
        }
        tensors.push(TensorInfo {
            name,
            ggml_type,
            dims,
            offset,
            n_bytes,
        });
        info_offsets.push(info_offset);
    }
    Ok((tensors, info_offsets))
}

/// Byte size of a tensor, with every multiplication checked.
fn tensor_bytes(ggml_type: GgmlType, dims: &[u64], name: &str, offset: u64) -> Result<u64> {
    let ne0 = dims.first().copied().unwrap_or(1);
    let block = ggml_type.block_size() as u64;
    if !ne0.is_multiple_of(block) {
        return Err(GgufError::PartialBlock {
            offset,
            tensor: name.to_owned(),
            ggml_type,
            ne0,
            block,
        });
    }
    let overflow = || GgufError::SizeOverflow {
        offset,
        tensor: name.to_owned(),
        dims: dims.to_vec(),
    };
    // The element count must itself fit (ggml keeps it in an int64) even if the byte size would.
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(overflow)?;
    let row = ggml_type.row_bytes(ne0).ok_or_else(overflow)?;
    let rows = n_elements.checked_div(ne0).unwrap_or(0);
    row.checked_mul(rows).ok_or_else(overflow)
}

fn check_tensor_ranges(
    tensors: &[TensorInfo],
    info_offsets: &[u64],
    data_offset: u64,
    file_len: u64,
) -> Result<()> {
    for (t, &info_offset) in tensors.iter().zip(info_offsets) {
        let start = data_offset.checked_add(t.offset);
        let end = start.and_then(|s| s.checked_add(t.n_bytes));
        match (start, end) {
            (Some(_), Some(end)) if end <= file_len => {}
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    offset: info_offset,
                    tensor: t.name.clone(),
                    start: start.unwrap_or(u64::MAX),
                    end: end.unwrap_or(u64::MAX),
                    file_len,
                });
            }
        }
    }
    Ok(())
}

/// No two tensors may share data bytes (empty tensors occupy none). Checked before the
/// placement rule, which would also reject an overlap, because naming both tensors is the
/// more useful diagnosis. Ranges were bounds-checked, so the additions cannot overflow.
fn check_no_overlap(tensors: &[TensorInfo], info_offsets: &[u64]) -> Result<()> {
    let mut by_start: Vec<usize> = (0..tensors.len())
        .filter(|&i| tensors[i].n_bytes > 0)
        .collect();
    by_start.sort_by_key(|&i| (tensors[i].offset, i));
    let end = |t: &TensorInfo| t.offset + t.n_bytes;
    // The tensor whose data reaches furthest among those starting earlier: any later start
    // below its end overlaps it.
    let mut furthest: Option<&TensorInfo> = None;
    for &i in &by_start {
        let t = &tensors[i];
        match furthest {
            Some(f) if t.offset < end(f) => {
                return Err(GgufError::TensorOverlap {
                    offset: info_offsets[i],
                    tensor: t.name.clone(),
                    data_offset: t.offset,
                    other: Box::new(TensorSpan {
                        name: f.name.clone(),
                        start: f.offset,
                        end: end(f),
                    }),
                });
            }
            Some(f) if end(t) <= end(f) => {}
            _ => furthest = Some(t),
        }
    }
    Ok(())
}

/// llama.cpp loads a file only when each tensor's data starts where the previous one's,
/// padded to the alignment, ends (the first at 0): no gaps, no reordering. The same rule
/// here keeps the two readers agreeing on which files are valid.
fn check_placement(tensors: &[TensorInfo], info_offsets: &[u64], alignment: u64) -> Result<()> {
    let mut expected = 0u64;
    for (t, &info_offset) in tensors.iter().zip(info_offsets) {
        if t.offset != expected {
            return Err(GgufError::TensorOutOfPlace {
                offset: info_offset,
                tensor: t.name.clone(),
                data_offset: t.offset,
                expected,
                reason: if t.offset < expected {
                    "it starts inside the previous tensors' padded data"
                } else {
                    "it leaves a gap, or the data is out of order"
                },
            });
        }
        // In-bounds sizes of in-bounds tensors: saturating only guards the impossible.
        let padded = t
            .n_bytes
            .checked_next_multiple_of(alignment)
            .unwrap_or(u64::MAX);
        expected = expected.saturating_add(padded);
    }
    Ok(())
}
