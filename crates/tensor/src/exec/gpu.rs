//! [`Exec`] on a GPU: activations are f32 tensors in device memory; each op dispatches its
//! WGSL kernel and replaces the output handle with the result (buffers come from the pool),
//! so nothing returns to the host until a caller downloads logits or embeddings.

use std::sync::Arc;

use super::{Exec, KvStore, KvType, Unary};
use crate::gpu::{GpuContext, ops};
use crate::ops::attention::{AttnMask, AttnParams};
use crate::ops::rope::RopeConfig;
use crate::{DType, Result, Tensor, TensorError};

/// A GPU backend on one device.
#[derive(Clone, Debug)]
pub struct GpuExec {
    ctx: Arc<GpuContext>,
}

impl GpuExec {
    pub fn new(ctx: Arc<GpuContext>) -> Self {
        Self { ctx }
    }

    pub fn context(&self) -> &GpuContext {
        &self.ctx
    }

    /// Uploads a weight matrix once, keeping its stored (possibly quantized) bytes.
    pub fn weight(&self, w: &Tensor) -> Result<Tensor> {
        w.to_gpu(&self.ctx)
    }
}

/// `x` seen as `rows × (numel / rows)`.
fn as_rows(x: &Tensor, rows: usize) -> Result<Tensor> {
    let n = x.numel();
    if rows == 0 || !n.is_multiple_of(rows) {
        return Err(TensorError::ShapeMismatch {
            op: "gpu exec",
            detail: format!("{n} values are not {rows} whole rows"),
        });
    }
    x.reshape(&[rows, n / rows])
}

fn flat(x: Tensor) -> Result<Tensor> {
    let n = x.numel();
    x.reshape(&[n])
}

fn host_store(op: &'static str) -> TensorError {
    TensorError::Unsupported {
        op,
        dtype: DType::F32,
        backend: "gpu (the cache lives in host memory)",
    }
}

impl Exec for GpuExec {
    type Act = Tensor;
    type Vector = Tensor;

    fn alloc(&self, len: usize) -> Result<Tensor> {
        ops::zeros(&self.ctx, DType::F32, &[len.max(1)])
    }

    fn upload(&self, data: &[f32]) -> Result<Tensor> {
        Tensor::from_f32(&[data.len()], data)?.to_gpu(&self.ctx)
    }

    fn download(&self, x: Tensor) -> Result<Vec<f32>> {
        x.to_f32_vec()
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        eps: f32,
        cols: usize,
        out: &mut Tensor,
    ) -> Result<()> {
        let rows = as_rows(x, x.numel() / cols.max(1))?;
        *out = flat(ops::layer_norm(&rows, Some(w), b, eps)?)?;
        Ok(())
    }

    fn unary(&self, op: Unary, x: &mut Tensor) -> Result<()> {
        *x = match op {
            Unary::GeluTanh => ops::gelu_tanh(x)?,
            Unary::GeluErf => ops::gelu_erf(x)?,
            Unary::GeluQuick => ops::gelu_quick(x)?,
            Unary::Silu => ops::silu(x)?,
        };
        Ok(())
    }

    fn mul(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        *x = ops::mul(x, y)?;
        Ok(())
    }

    fn attention_spans(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        n: usize,
        spans: &[std::ops::Range<usize>],
        params: &AttnParams,
        out: &mut Tensor,
    ) -> Result<()> {
        // One pass with a mask: no key is causally visible (k_pos 1 > q_pos 0), so a token
        // sees exactly the tokens of its span, which share a group id.
        let (q_pos, k_pos, groups) = if spans.len() == 1 {
            let pos: Vec<i32> = (0..n as i32).collect();
            (pos.clone(), pos, None)
        } else {
            let mut group = vec![0u32; n];
            for (i, r) in spans.iter().enumerate() {
                group[r.clone()].fill(i as u32 + 1);
            }
            (vec![0; n], vec![1; n], Some(group))
        };
        let mask = AttnMask {
            q_pos: &q_pos,
            k_pos: &k_pos,
            causal: groups.is_some(),
            window: None,
            q_group: groups.as_deref(),
            k_group: groups.as_deref(),
        };
        let (qr, kr, vr) = (as_rows(q, n)?, as_rows(k, n)?, as_rows(v, n)?);
        *out = flat(ops::attention(&qr, &kr, &vr, n, &mask, params)?)?;
        Ok(())
    }

    fn vector(&self, data: &[f32]) -> Result<Tensor> {
        self.upload(data)
    }

    fn rms_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        eps: f32,
        cols: usize,
        out: &mut Tensor,
    ) -> Result<()> {
        let rows = as_rows(x, x.numel() / cols.max(1))?;
        *out = flat(ops::rms_norm(&rows, Some(w), eps)?)?;
        Ok(())
    }

    fn rms_norm_inplace(
        &self,
        x: &mut Tensor,
        w: &Tensor,
        eps: f32,
        cols: usize,
        _tmp: &mut Tensor,
    ) -> Result<()> {
        let rows = as_rows(x, x.numel() / cols.max(1))?;
        *x = flat(ops::rms_norm(&rows, Some(w), eps)?)?;
        Ok(())
    }

    fn matmul(&self, w: &Tensor, x: &Tensor, n: usize, out: &mut Tensor) -> Result<()> {
        *out = flat(ops::matmul(&as_rows(x, n)?, w)?)?;
        Ok(())
    }

    fn matmul_bias(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        x: &Tensor,
        n: usize,
        out: &mut Tensor,
    ) -> Result<()> {
        *out = flat(ops::linear(&as_rows(x, n)?, w, b, None)?)?;
        Ok(())
    }

    fn linear(
        &self,
        w: &Tensor,
        b: Option<&Tensor>,
        act: Option<Unary>,
        x: &Tensor,
        n: usize,
        out: &mut Tensor,
    ) -> Result<()> {
        *out = flat(ops::linear(&as_rows(x, n)?, w, b, act)?)?;
        Ok(())
    }

    fn add_rows(&self, x: &mut Tensor, b: &Tensor) -> Result<()> {
        let rows = as_rows(x, x.numel() / b.numel().max(1))?;
        *x = flat(ops::add(&rows, b)?)?;
        Ok(())
    }

    fn add(&self, x: &mut Tensor, y: &Tensor) -> Result<()> {
        *x = ops::add(x, y)?;
        Ok(())
    }

    fn scale(&self, x: &mut Tensor, s: f32) -> Result<()> {
        *x = ops::scale(x, s)?;
        Ok(())
    }

    fn softcap(&self, x: &mut Tensor, cap: f32) -> Result<()> {
        *x = ops::softcap(x, cap)?;
        Ok(())
    }

    fn rope(
        &self,
        x: &mut Tensor,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos: &[i32],
        cfg: &RopeConfig,
    ) -> Result<()> {
        let shaped = x.reshape(&[n, heads, head_dim])?;
        *x = flat(ops::rope(&shaped, pos, cfg)?)?;
        Ok(())
    }

    fn swiglu(&self, gate: &Tensor, up: &Tensor, out: &mut Tensor) -> Result<()> {
        *out = ops::swiglu(gate, up)?;
        Ok(())
    }

    fn geglu_f16_table(&self, gate: &Tensor, up: &Tensor, out: &mut Tensor) -> Result<()> {
        *out = ops::geglu_f16_table(gate, up)?;
        Ok(())
    }

    fn im2col(
        &self,
        x: &Tensor,
        chw: [usize; 3],
        kernel: [usize; 2],
        p: &crate::ops::conv::Conv2dParams,
    ) -> Result<Tensor> {
        flat(ops::im2col(x, chw, kernel, p)?)
    }

    fn pool_avg_grid(&self, x: &Tensor, hwd: [usize; 3], k: [usize; 2]) -> Result<Tensor> {
        flat(ops::pool_avg_grid(x, hwd, k)?)
    }

    fn transpose(&self, x: &Tensor, rows: usize, cols: usize) -> Result<Tensor> {
        flat(ops::transpose(x, rows, cols)?)
    }

    fn round_f16(&self, x: &mut Tensor) -> Result<()> {
        *x = ops::round_f16(x)?;
        Ok(())
    }

    fn unfold_grid(&self, x: &Tensor, hwd: [usize; 3], k: usize) -> Result<Tensor> {
        flat(ops::unfold_grid(x, hwd, k)?)
    }

    fn rope_2d(
        &self,
        x: &mut Tensor,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos_a: &[i32],
        pos_b: &[i32],
        base: f32,
        interleave_freq: bool,
    ) -> Result<()> {
        let shaped = x.reshape(&[n, heads, head_dim])?;
        *x = flat(ops::rope_2d(&shaped, pos_a, pos_b, base, interleave_freq)?)?;
        Ok(())
    }

    fn resize_bilinear_grid(
        &self,
        x: &Tensor,
        hwd: [usize; 3],
        out_hw: [usize; 2],
    ) -> Result<Tensor> {
        flat(ops::resize_bilinear_grid(x, hwd, out_hw)?)
    }

    fn gather_rows(&self, x: &Tensor, cols: usize, rows: &[usize]) -> Result<Tensor> {
        let ids: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let shaped = as_rows(x, x.numel() / cols.max(1))?;
        flat(ops::get_rows(&shaped, &ids)?)
    }

    fn copy_rows(&self, dst: &mut Tensor, cols: usize, first: usize, src: &Tensor) -> Result<()> {
        let rows = dst.numel() / cols.max(1);
        let n = src.numel() / cols.max(1);
        ops::write_rows(&as_rows(dst, rows)?, first, &as_rows(src, n)?)
    }

    fn kv_alloc(&self, kind: KvType, rows: usize, width: usize) -> Result<KvStore> {
        let dtype = match kind {
            KvType::F32 => DType::F32,
            KvType::F16 => DType::F16,
        };
        Ok(KvStore::Gpu(ops::zeros(&self.ctx, dtype, &[rows, width])?))
    }

    fn kv_write(&self, kv: &mut KvStore, width: usize, first: usize, rows: &Tensor) -> Result<()> {
        let KvStore::Gpu(dst) = kv else {
            return Err(host_store("kv_write"));
        };
        ops::write_rows(dst, first, &as_rows(rows, rows.numel() / width.max(1))?)
    }

    fn rope_kv_write(
        &self,
        kv: &mut KvStore,
        first: usize,
        rows: &mut Tensor,
        n: usize,
        heads: usize,
        head_dim: usize,
        pos: &[i32],
        cfg: &RopeConfig,
    ) -> Result<()> {
        let KvStore::Gpu(dst) = kv else {
            return Err(host_store("kv_write"));
        };
        ops::rope_write_rows(dst, first, &rows.reshape(&[n, heads, head_dim])?, pos, cfg)
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &KvStore,
        v: &KvStore,
        _width: usize,
        n_kv: usize,
        mask: &AttnMask<'_>,
        params: &AttnParams,
        out: &mut Tensor,
    ) -> Result<()> {
        let (KvStore::Gpu(kt), KvStore::Gpu(vt)) = (k, v) else {
            return Err(host_store("attention"));
        };
        let q_rows = as_rows(q, mask.n_q())?;
        *out = flat(ops::attention(&q_rows, kt, vt, n_kv, mask, params)?)?;
        Ok(())
    }
}
