use crate::DType;

/// Everything the tensor runtime can refuse.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("shape mismatch in {op}: {detail}")]
    ShapeMismatch { op: &'static str, detail: String },
    #[error("{op} does not support {dtype} on {backend}")]
    Unsupported {
        op: &'static str,
        dtype: DType,
        backend: &'static str,
    },
    #[error("tensor of {dtype} with shape {shape:?} needs {needed} bytes, storage has {available}")]
    StorageTooSmall {
        dtype: DType,
        shape: Vec<usize>,
        needed: usize,
        available: usize,
    },
    #[error("row of {len} elements is not a whole number of {dtype} blocks ({block} each)")]
    PartialBlock {
        dtype: DType,
        len: usize,
        block: usize,
    },
    #[error("{0}")]
    InvalidView(String),
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("gpu: {0}")]
    Gpu(String),
    /// The device could not allocate: the model (or this step) needs more GPU memory than
    /// is free. Nothing of the failed step was kept.
    #[error(
        "gpu out of memory: {0} (try fewer GPU layers with -ngl, a smaller context or --device cpu)"
    )]
    GpuOutOfMemory(String),
    /// The device stopped working (driver reset, GPU removed): every later GPU call fails
    /// at once with this error.
    #[error("gpu device lost: {0}; restart on another device (--device cpu)")]
    GpuLost(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
