use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can be wrong with a GGUF file or a metadata lookup.
///
/// Parse errors carry the byte offset (from the start of the file) of the field that was
/// wrong, so a user can look at the file with a hex viewer.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {}: {err}", path.display())]
    Io {
        path: PathBuf,
        // Not a `source`: the message already carries it, and error chains would repeat it.
        err: std::io::Error,
    },
    #[error(
        "at byte {offset}: file ends while reading {what} (needs {needed} bytes, {available} left)"
    )]
    Truncated {
        offset: u64,
        what: String,
        needed: u64,
        available: u64,
    },
    #[error("at byte 0: not a GGUF file (magic is {found:02x?}, expected \"GGUF\")")]
    BadMagic { found: Vec<u8> },
    #[error("at byte 4: big-endian GGUF files are not supported (version field reads {raw:#010x})")]
    BigEndian { raw: u32 },
    #[error("at byte 4: unsupported GGUF version {version} (only versions 2 and 3 are read)")]
    UnsupportedVersion { version: u32 },
    #[error(
        "at byte {offset}: {what} count {count} is impossible: the {available} bytes left hold at most {max}"
    )]
    CountTooLarge {
        offset: u64,
        what: String,
        count: u64,
        max: u64,
        available: u64,
    },
    #[error("at byte {offset}: {what} is not valid UTF-8 ({detail})")]
    InvalidUtf8 {
        offset: u64,
        what: String,
        detail: String,
    },
    #[error("at byte {offset}: unknown metadata value type {id} for key '{key}'")]
    UnknownValueType { offset: u64, key: String, id: u32 },
    #[error("at byte {offset}: key '{key}' nests arrays deeper than {max_depth} levels")]
    NestingTooDeep {
        offset: u64,
        key: String,
        max_depth: usize,
    },
    #[error("at byte {offset}: duplicate metadata key '{key}'")]
    DuplicateKey { offset: u64, key: String },
    #[error("at byte {offset}: metadata entry {index} has an empty key")]
    EmptyKey { offset: u64, index: u64 },
    #[error("at byte {offset}: general.alignment {detail}")]
    BadAlignment { offset: u64, detail: String },
    #[error("at byte {offset}: tensor '{tensor}' has {n_dims} dimensions (at most {max} allowed)")]
    TooManyDims {
        offset: u64,
        tensor: String,
        n_dims: u32,
        max: u32,
    },
    #[error(
        "at byte {offset}: tensor '{tensor}' has dimension {index} = {value}, which is negative as int64"
    )]
    NegativeDim {
        offset: u64,
        tensor: String,
        index: usize,
        value: u64,
    },
    #[error("at byte {offset}: tensor '{tensor}' has unknown ggml type id {id}")]
    UnknownGgmlType {
        offset: u64,
        tensor: String,
        id: u32,
    },
    #[error(
        "at byte {offset}: tensor '{tensor}' of type {ggml_type} has ne0 = {ne0}, not a multiple of the block size {block}"
    )]
    PartialBlock {
        offset: u64,
        tensor: String,
        ggml_type: GgmlType,
        ne0: u64,
        block: u64,
    },
    #[error(
        "at byte {offset}: tensor '{tensor}' with dims {dims:?} has a size that overflows 64 bits"
    )]
    SizeOverflow {
        offset: u64,
        tensor: String,
        dims: Vec<u64>,
    },
    #[error(
        "at byte {offset}: tensor '{tensor}' data offset {data_offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        offset: u64,
        tensor: String,
        data_offset: u64,
        alignment: u64,
    },
    #[error(
        "at byte {offset}: tensor '{tensor}' data [{start}, {end}) extends past end of file ({file_len} bytes)"
    )]
    TensorOutOfBounds {
        offset: u64,
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },
    #[error("at byte {offset}: duplicate tensor name '{name}'")]
    DuplicateTensor { offset: u64, name: String },
    /// `name` is cut to its first bytes: the point is that it is too long to show.
    #[error(
        "at byte {offset}: name of tensor {index} is {len} bytes long, at most {max} allowed ('{name}')"
    )]
    NameTooLong {
        offset: u64,
        index: u64,
        name: String,
        len: u64,
        max: u64,
    },
    /// `data_offset` and the span are relative to the data section, as the file stores them.
    #[error("at byte {offset}: tensor '{tensor}' data at offset {data_offset} overlaps {other}")]
    TensorOverlap {
        offset: u64,
        tensor: String,
        data_offset: u64,
        // Boxed: every error that wraps a GgufError pays for its largest variant.
        other: Box<TensorSpan>,
    },
    #[error(
        "at byte {offset}: tensor '{tensor}' data at offset {data_offset}, but tensor-info order puts it at {expected} ({reason})"
    )]
    TensorOutOfPlace {
        offset: u64,
        tensor: String,
        data_offset: u64,
        expected: u64,
        reason: &'static str,
    },
    #[error("metadata key '{key}' is missing")]
    MissingKey { key: String },
    #[error("metadata key '{key}': expected {expected}, found {actual}")]
    KeyType {
        key: String,
        expected: &'static str,
        actual: String,
    },
}

/// A tensor's data range within the data section, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpan {
    pub name: String,
    pub start: u64,
    pub end: u64,
}

impl std::fmt::Display for TensorSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}' ({}..{})", self.name, self.start, self.end)
    }
}

impl GgufError {
    /// The byte offset the error points at, for parse errors.
    pub fn offset(&self) -> Option<u64> {
        use GgufError::*;
        match self {
            Truncated { offset, .. }
            | CountTooLarge { offset, .. }
            | InvalidUtf8 { offset, .. }
            | UnknownValueType { offset, .. }
            | NestingTooDeep { offset, .. }
            | DuplicateKey { offset, .. }
            | EmptyKey { offset, .. }
            | BadAlignment { offset, .. }
            | TooManyDims { offset, .. }
            | NegativeDim { offset, .. }
            | UnknownGgmlType { offset, .. }
            | PartialBlock { offset, .. }
            | SizeOverflow { offset, .. }
            | MisalignedTensor { offset, .. }
            | TensorOutOfBounds { offset, .. }
            | DuplicateTensor { offset, .. }
            | NameTooLong { offset, .. }
            | TensorOverlap { offset, .. }
            | TensorOutOfPlace { offset, .. } => Some(*offset),
            BadMagic { .. } => Some(0),
            BigEndian { .. } | UnsupportedVersion { .. } => Some(4),
            Io { .. } | MissingKey { .. } | KeyType { .. } => None,
        }
    }
}
