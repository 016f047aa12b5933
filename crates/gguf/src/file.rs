//! A parsed GGUF file: metadata with typed accessors, tensor infos, zero-copy tensor data.

use std::collections::HashMap;
use std::path::Path;

use crate::reader::{self, Parsed};
use crate::value::{Array, Value};
use crate::{GgmlType, GgufError, MappedBytes};

type Result<T> = std::result::Result<T, GgufError>;

/// One tensor's description. Its data was checked to lie inside the file at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml `ne` order: `dims[0]` is the innermost, contiguous dimension.
    pub dims: Vec<u64>,
    /// Relative to the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Row-major shape, outermost first (the dims reversed). Dims were checked at parse time
    /// to have an element count that fits in i64; on a 64-bit host each fits in usize.
    pub fn shape(&self) -> Vec<usize> {
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }

    /// Number of elements (1 for a 0-dimensional tensor).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF v2/v3 file over its bytes (usually a memory map).
pub struct GgufFile {
    bytes: MappedBytes,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let bytes = MappedBytes::map_file(path).map_err(|err| GgufError::Io {
            path: path.to_owned(),
            err,
        })?;
        Self::from_bytes(bytes)
    }

    /// Parses a buffer holding a whole GGUF file.
    pub fn from_bytes(bytes: MappedBytes) -> Result<GgufFile> {
        let Parsed {
            version,
            alignment,
            data_offset,
            metadata,
            tensors,
        } = reader::parse(&bytes)?;
        let key_index = metadata
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let tensor_index = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(GgufFile {
            bytes,
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// File offset where the tensor data section starts.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// Length of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Every KV, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The tensor's bytes, zero-copy. The range was checked at parse time; an info that does
    /// not come from this file and does not fit gives an empty slice (which every consumer
    /// then rejects as too small) rather than a panic.
    pub fn tensor_data(&self, info: &TensorInfo) -> MappedBytes {
        let range = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some(start..start.checked_add(info.n_bytes)?))
            .and_then(|r| Some(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?));
        range
            .and_then(|r| self.bytes.slice(r))
            .unwrap_or_else(|| MappedBytes::from_vec(Vec::new()))
    }

    /// The bytes of the tensor called `name`, if there is one.
    pub fn tensor_bytes(&self, name: &str) -> Option<MappedBytes> {
        self.tensor(name).map(|t| self.tensor_data(t))
    }

    /// The value of `key`, or `MissingKey`.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        convert: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        convert(value).map(Some).ok_or_else(|| GgufError::KeyType {
            key: key.to_owned(),
            expected,
            actual: value.describe(),
        })
    }

    fn required<T>(&self, key: &str, found: Result<Option<T>>) -> Result<T> {
        found?.ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }
}

/// `get_x` (missing is an error) and `opt_x` (missing is `Ok(None)`) pairs.
macro_rules! accessors {
    ($( $get:ident, $opt:ident, $ty:ty, $expected:literal, $convert:expr; )*) => {
        impl GgufFile {
            $(
                #[doc = concat!("The value of `key` as ", $expected, "; `MissingKey` or `KeyType` otherwise.")]
                pub fn $get(&self, key: &str) -> Result<$ty> {
                    self.required(key, self.$opt(key))
                }

                #[doc = concat!("The value of `key` as ", $expected, ", `Ok(None)` when absent, `KeyType` when of another type.")]
                pub fn $opt(&self, key: &str) -> Result<Option<$ty>> {
                    self.typed(key, $expected, $convert)
                }
            )*
        }
    };
}

accessors! {
    get_u32, opt_u32, u32, "an integer that fits in u32", Value::as_u32;
    get_u64, opt_u64, u64, "an integer that fits in u64", Value::as_u64;
    get_i32, opt_i32, i32, "an integer that fits in i32", Value::as_i32;
    get_i64, opt_i64, i64, "an integer that fits in i64", Value::as_i64;
    get_f32, opt_f32, f32, "f32 or f64", Value::as_f32;
    get_f64, opt_f64, f64, "f32 or f64", Value::as_f64;
    get_bool, opt_bool, bool, "bool", Value::as_bool;
    get_str, opt_str, &str, "string", Value::as_str;
    get_array, opt_array, &Array, "array", Value::as_array;
}
