//! Emits GGUF v3 the way llama.cpp and gguf-py do: header, KVs, tensor infos, zero padding
//! to the alignment, then each tensor's data padded to the alignment.
//!
//! The writer writes what it is given without judging it (a tensor whose data length does
//! not match its dims, a bad `general.alignment`): tests use that to build malformed files.
//! Parse the result back with [`crate::GgufFile::from_bytes`] to validate it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::reader::{ALIGNMENT_KEY, DEFAULT_ALIGNMENT, MAGIC};
use crate::value::{Array, Value};
use crate::{GgmlType, GgufError};

struct PendingTensor {
    name: String,
    ggml_type: GgmlType,
    dims: Vec<u64>,
    data: Vec<u8>,
}

/// Builds a GGUF v3 file in memory.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<PendingTensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a KV, replacing an earlier one with the same key (its position is kept).
    pub fn add_kv(&mut self, key: &str, value: Value) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
        self
    }

    /// Adds a tensor; `dims_ne` in ggml order (innermost first), `data` its raw bytes.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ggml_type: GgmlType,
        dims_ne: &[u64],
        data: &[u8],
    ) -> &mut Self {
        self.tensors.push(PendingTensor {
            name: name.to_owned(),
            ggml_type,
            dims: dims_ne.to_vec(),
            data: data.to_vec(),
        });
        self
    }

    /// Sets `general.alignment` (stored as u32, as the spec requires; values past u32 are
    /// stored as u64, which readers reject).
    pub fn set_alignment(&mut self, alignment: u64) -> &mut Self {
        let value = match u32::try_from(alignment) {
            Ok(a) => Value::U32(a),
            Err(_) => Value::U64(alignment),
        };
        self.add_kv(ALIGNMENT_KEY, value)
    }

    /// The padding unit: `general.alignment` when it is a usable u32, else the default.
    fn alignment(&self) -> usize {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, Value::U32(a))) if *a > 0 => *a as usize,
            _ => DEFAULT_ALIGNMENT as usize,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let alignment = self.alignment();
        let infos = self.tensors.iter().map(|t| TensorHeader {
            name: &t.name,
            ggml_type: t.ggml_type,
            dims: &t.dims,
            n_bytes: t.data.len() as u64,
        });
        let mut out = encode_header(&self.metadata, infos, alignment);
        for t in &self.tensors {
            out.extend_from_slice(&t.data);
            pad(&mut out, alignment);
        }
        out
    }

    pub fn write_to(&self, path: impl AsRef<Path>) -> Result<(), GgufError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|err| GgufError::Io {
            path: path.to_owned(),
            err,
        })
    }
}

/// What the header says about one tensor; its data follows later, padded to the alignment.
struct TensorHeader<'a> {
    name: &'a str,
    ggml_type: GgmlType,
    dims: &'a [u64],
    n_bytes: u64,
}

/// Header, KVs and tensor infos, zero-padded to the alignment: everything before the data.
fn encode_header<'a>(
    metadata: &[(String, Value)],
    tensors: impl ExactSizeIterator<Item = TensorHeader<'a>>,
    alignment: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        write_str(&mut out, key);
        out.extend_from_slice(&(value.value_type() as u32).to_le_bytes());
        write_value(&mut out, value);
    }
    let mut offset = 0u64;
    for t in tensors {
        write_str(&mut out, t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(t.ggml_type as u32).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += t.n_bytes.next_multiple_of(alignment as u64);
    }
    pad(&mut out, alignment);
    out
}

fn pad(out: &mut Vec<u8>, alignment: usize) {
    out.resize(out.len().next_multiple_of(alignment), 0);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => write_str(out, s),
        Value::Array(Array { elem_type, items }) => {
            out.extend_from_slice(&(*elem_type as u32).to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
    }
}

/// Why a streamed write failed.
#[derive(Debug, thiserror::Error)]
pub enum GgufWriteError {
    #[error("cannot write {}: {err}", path.display())]
    Io {
        path: PathBuf,
        // Not a `source`: the message already carries it.
        err: std::io::Error,
    },
    #[error(
        "tensor '{tensor}' of type {ggml_type} has ne0 = {ne0}, not a multiple of the block size {block}"
    )]
    PartialBlock {
        tensor: String,
        ggml_type: GgmlType,
        ne0: u64,
        block: u64,
    },
    #[error("tensor '{tensor}' with dims {dims:?} has a size that overflows 64 bits")]
    SizeOverflow { tensor: String, dims: Vec<u64> },
    #[error(
        "tensor '{tensor}': the producer wrote {written} bytes, the header promised {expected}"
    )]
    WrongLength {
        tensor: String,
        expected: u64,
        written: u64,
    },
    #[error("tensor '{tensor}': {err}")]
    Produce { tensor: String, err: std::io::Error },
}

/// One tensor of a streamed file; its bytes come from the producer at write time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTensor {
    pub name: String,
    pub ggml_type: GgmlType,
    /// ggml order (innermost first).
    pub dims_ne: Vec<u64>,
    /// Data bytes, from the type's block geometry.
    pub n_bytes: u64,
}

/// Writes a GGUF v3 file whose tensor data is produced tensor by tensor, chunk by chunk,
/// so a multi-gigabyte file never sits in memory. The layout is [`GgufWriter`]'s: header,
/// KVs, tensor infos, padding, then each tensor's data padded to the alignment.
#[derive(Default)]
pub struct GgufStreamWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<StreamTensor>,
}

impl GgufStreamWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a KV, replacing an earlier one with the same key (its position is kept).
    pub fn add_kv(&mut self, key: &str, value: Value) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
        self
    }

    /// Sets `general.alignment` (a u32, as the spec requires).
    pub fn set_alignment(&mut self, alignment: u32) -> &mut Self {
        self.add_kv(ALIGNMENT_KEY, Value::U32(alignment))
    }

    /// Declares a tensor (`dims_ne` innermost first); its size follows from the type.
    pub fn add_tensor(
        &mut self,
        name: &str,
        ggml_type: GgmlType,
        dims_ne: &[u64],
    ) -> Result<&mut Self, GgufWriteError> {
        let ne0 = dims_ne.first().copied().unwrap_or(1);
        let block = ggml_type.block_size() as u64;
        if !ne0.is_multiple_of(block) {
            return Err(GgufWriteError::PartialBlock {
                tensor: name.to_owned(),
                ggml_type,
                ne0,
                block,
            });
        }
        let overflow = || GgufWriteError::SizeOverflow {
            tensor: name.to_owned(),
            dims: dims_ne.to_vec(),
        };
        let rows = dims_ne
            .iter()
            .skip(1)
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        let n_bytes = ggml_type
            .row_bytes(ne0)
            .and_then(|row| row.checked_mul(rows))
            .ok_or_else(overflow)?;
        self.tensors.push(StreamTensor {
            name: name.to_owned(),
            ggml_type,
            dims_ne: dims_ne.to_vec(),
            n_bytes,
        });
        Ok(self)
    }

    pub fn tensors(&self) -> &[StreamTensor] {
        &self.tensors
    }

    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The padding unit: `general.alignment` when it is a usable u32, else the default.
    fn alignment(&self) -> usize {
        match self.metadata.iter().find(|(k, _)| k == ALIGNMENT_KEY) {
            Some((_, Value::U32(a))) if *a > 0 => *a as usize,
            _ => DEFAULT_ALIGNMENT as usize,
        }
    }

    /// Total tensor data bytes (without padding): what a progress bar counts.
    pub fn data_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_bytes).sum()
    }

    /// Writes the file to `out`. `produce(i, tensor, sink)` is called once per tensor, in
    /// declaration order, and must write exactly `tensor.n_bytes` bytes into `sink`, in as
    /// many pieces as it likes. Returns the file's length.
    pub fn write<W: Write>(
        &self,
        out: &mut W,
        mut produce: impl FnMut(usize, &StreamTensor, &mut TensorSink<'_>) -> std::io::Result<()>,
    ) -> Result<u64, StreamError> {
        let alignment = self.alignment();
        let infos = self.tensors.iter().map(|t| TensorHeader {
            name: &t.name,
            ggml_type: t.ggml_type,
            dims: &t.dims_ne,
            n_bytes: t.n_bytes,
        });
        let header = encode_header(&self.metadata, infos, alignment);
        out.write_all(&header).map_err(StreamError::Io)?;
        let mut total = header.len() as u64;
        let zeros = vec![0u8; alignment];
        for (i, t) in self.tensors.iter().enumerate() {
            let mut sink = TensorSink {
                out: &mut *out,
                remaining: t.n_bytes,
                output_failed: None,
            };
            let produced = produce(i, t, &mut sink);
            // A write error inside the sink is the output's, not the producer's.
            if let Some(kind) = sink.output_failed {
                return Err(StreamError::Io(match produced {
                    Err(err) => err,
                    Ok(()) => kind.into(),
                }));
            }
            if let Err(err) = produced {
                return Err(StreamError::Tensor(GgufWriteError::Produce {
                    tensor: t.name.clone(),
                    err,
                }));
            }
            if sink.remaining != 0 {
                return Err(StreamError::Tensor(GgufWriteError::WrongLength {
                    tensor: t.name.clone(),
                    expected: t.n_bytes,
                    written: t.n_bytes - sink.remaining,
                }));
            }
            let padded = t.n_bytes.next_multiple_of(alignment as u64);
            let fill = (padded - t.n_bytes) as usize;
            out.write_all(&zeros[..fill]).map_err(StreamError::Io)?;
            total += padded;
        }
        out.flush().map_err(StreamError::Io)?;
        Ok(total)
    }

    /// Writes the file at `path` through `PATH.part`, renamed into place once complete,
    /// so an interrupted run never leaves a truncated file under the final name.
    pub fn write_file(
        &self,
        path: impl AsRef<Path>,
        produce: impl FnMut(usize, &StreamTensor, &mut TensorSink<'_>) -> std::io::Result<()>,
    ) -> Result<u64, GgufWriteError> {
        let path = path.as_ref();
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |err| GgufWriteError::Io { path: p, err }
        };
        let file = std::fs::File::create(&part).map_err(io_err(&part))?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let written = match self.write(&mut out, produce) {
            Ok(n) => n,
            Err(e) => {
                drop(out);
                let _ = std::fs::remove_file(&part);
                return Err(match e {
                    StreamError::Io(err) => GgufWriteError::Io { path: part, err },
                    StreamError::Tensor(e) => e,
                });
            }
        };
        let file = out.into_inner().map_err(|e| GgufWriteError::Io {
            path: part.clone(),
            err: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&part))?;
        std::fs::rename(&part, path).map_err(io_err(path))?;
        Ok(written)
    }
}

/// A streamed write's failure: the output's I/O, or a tensor's (producer error, wrong length).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error(transparent)]
    Tensor(GgufWriteError),
}

/// Where a producer writes one tensor's bytes; refuses more than the header promised.
pub struct TensorSink<'a> {
    out: &'a mut dyn Write,
    /// Bytes still owed.
    remaining: u64,
    output_failed: Option<std::io::ErrorKind>,
}

impl TensorSink<'_> {
    /// Bytes still to write for this tensor.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.len() as u64 > self.remaining {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} bytes more than the tensor's size ({} left)",
                    bytes.len(),
                    self.remaining
                ),
            ));
        }
        match self.out.write_all(bytes) {
            Ok(()) => {
                self.remaining -= bytes.len() as u64;
                Ok(())
            }
            Err(err) => {
                self.output_failed = Some(err.kind());
                Err(err)
            }
        }
    }
}
