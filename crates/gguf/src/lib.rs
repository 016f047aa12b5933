//! GGUF v2/v3: a reader that checks every count, size and offset against the file and
//! hands out tensor data as zero-copy slices of a memory map, and a writer that emits
//! files llama.cpp reads.

mod ggml_type;
mod mapped;

pub use ggml_type::GgmlType;
pub use mapped::MappedBytes;
