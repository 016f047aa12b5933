//! Ops: one module per op with its contract and scalar reference.
//!
//! Each module has the Tensor-level op (`ops::norm::rms_norm(&x, w, eps)`, f32 result) and
//! its scalar reference: `reference` (a function, or a module of them when the file holds
//! several ops) — plain loops that every backend is tested against.

// "cpu-core" ops.
pub mod act;
pub mod elementwise;
pub mod get_rows;
pub mod matmul;
pub mod norm;
pub mod softmax;

// "cpu-nn" ops.
pub mod attention;
pub mod concat;
pub mod conv;
pub mod interp;
pub mod permute;
pub mod pool;
pub mod rope;
