//! GGUF v2/v3: a reader that checks every count, size and offset against the file and
//! hands out tensor data as zero-copy slices of a memory map, and a writer that emits
//! files llama.cpp reads.

mod error;
mod file;
mod ggml_type;
mod mapped;
mod reader;
mod value;
mod writer;

pub use error::{GgufError, TensorSpan};
pub use file::{GgufFile, TensorInfo};
pub use ggml_type::GgmlType;
pub use mapped::{LoadMode, MappedBytes, load_mode, set_load_mode};
pub use value::{Array, Value, ValueType};
pub use writer::{
    GgufStreamWriter, GgufWriteError, GgufWriter, StreamError, StreamTensor, TensorSink,
};

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
