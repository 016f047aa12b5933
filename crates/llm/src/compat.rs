//! Numerics that follow llama.cpp's CPU backend where it deliberately rounds, so greedy
//! paths of fragile models (Gemma 3) stay on llama.cpp's side of near-ties.
//!
//! The kernels live in `tensor` so that the GPU backend can be bit-exact with them.

/// `out = gelu(gate) * up` exactly as ggml's CPU GEGLU (f16 GELU table, saturating outside
/// [-10, 10]); see `tensor::cpu::geglu_f16_table`.
pub use tensor::cpu::geglu_f16_table as geglu;
