//! TEMPORARY: stand-ins for the GPU kernels being written on the `gpuops` branch.
#![allow(unused_variables)]
use super::GpuContext;
use crate::ops::attention::{AttnMask, AttnParams};
use crate::{DType, Result, Tensor, TensorError};

fn todo(op: &'static str) -> TensorError {
    TensorError::Unsupported {
        op,
        dtype: DType::F32,
        backend: "gpu (pending)",
    }
}
pub fn zeros(ctx: &GpuContext, dtype: DType, shape: &[usize]) -> Result<Tensor> {
    Err(todo("zeros"))
}
pub fn write_rows(dst: &Tensor, first_row: usize, rows: &Tensor) -> Result<()> {
    Err(todo("write_rows"))
}
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    n_kv: usize,
    mask: &AttnMask,
    params: &AttnParams,
) -> Result<Tensor> {
    Err(todo("attention"))
}
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Err(todo("swiglu"))
}
pub fn geglu_f16_table(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    Err(todo("geglu"))
}
pub fn scale(x: &Tensor, s: f32) -> Result<Tensor> {
    Err(todo("scale"))
}
pub fn softcap(x: &Tensor, s: f32) -> Result<Tensor> {
    Err(todo("softcap"))
}
pub fn get_rows(x: &Tensor, rows: &[u32]) -> Result<Tensor> {
    Err(todo("get_rows"))
}
