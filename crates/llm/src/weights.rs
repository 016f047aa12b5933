//! Decoder weights, borrowed in place from the GGUF memory map (never dequantized as a whole).

use crate::error::{LlmError, Result};
use crate::hparams::HParams;
use gguf::GgufFile;
use tensor::Tensor;

/// One layer's weights. `V` holds small vectors (norm scales, biases): host `Vec<f32>` as
/// loaded, or the backend's own type once a layer is offloaded (matrices are [`Tensor`]s in
/// either memory).
pub struct LayerWeights<V = Vec<f32>> {
    pub attn_norm: V,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub bq: Option<V>,
    pub bk: Option<V>,
    pub bv: Option<V>,
    pub wo: Tensor,
    pub bo: Option<V>,
    pub q_norm: Option<V>,
    pub k_norm: Option<V>,
    pub attn_post_norm: Option<V>,
    pub ffn_norm: V,
    pub ffn_gate: Tensor,
    pub ffn_up: Tensor,
    pub ffn_down: Tensor,
    pub ffn_post_norm: Option<V>,
}

impl LayerWeights {
    /// The same layer with every matrix passed through `mat` and every vector through `vec`
    /// (e.g. uploaded to a GPU).
    pub fn map<V, E>(
        &self,
        mut mat: impl FnMut(&Tensor) -> std::result::Result<Tensor, E>,
        mut vec: impl FnMut(&[f32]) -> std::result::Result<V, E>,
    ) -> std::result::Result<LayerWeights<V>, E> {
        let mut opt = |v: &Option<Vec<f32>>| v.as_deref().map(&mut vec).transpose();
        Ok(LayerWeights {
            bq: opt(&self.bq)?,
            bk: opt(&self.bk)?,
            bv: opt(&self.bv)?,
            bo: opt(&self.bo)?,
            q_norm: opt(&self.q_norm)?,
            k_norm: opt(&self.k_norm)?,
            attn_post_norm: opt(&self.attn_post_norm)?,
            ffn_post_norm: opt(&self.ffn_post_norm)?,
            attn_norm: vec(&self.attn_norm)?,
            ffn_norm: vec(&self.ffn_norm)?,
            wq: mat(&self.wq)?,
            wk: mat(&self.wk)?,
            wv: mat(&self.wv)?,
            wo: mat(&self.wo)?,
            ffn_gate: mat(&self.ffn_gate)?,
            ffn_up: mat(&self.ffn_up)?,
            ffn_down: mat(&self.ffn_down)?,
        })
    }
}

pub struct Weights {
    pub tok_embd: Tensor,
    pub output_norm: Vec<f32>,
    /// The LM head; the token embedding itself when the model ties them.
    pub output: Tensor,
    pub rope_freqs: Option<Vec<f32>>,
    pub layers: Vec<LayerWeights>,
}

struct Loader<'a> {
    file: &'a GgufFile,
}

impl Loader<'_> {
    fn opt_tensor(&self, name: &str) -> Result<Option<Tensor>> {
        let Some(info) = self.file.tensor(name) else {
            return Ok(None);
        };
        let t = Tensor::from_mapped(info.ggml_type, &info.shape(), self.file.tensor_data(info))?;
        Ok(Some(t))
    }

    /// A 2-D weight `[rows, cols]` (rows = outputs).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        let t = self
            .opt_tensor(name)?
            .ok_or_else(|| LlmError::MissingTensor(name.into()))?;
        if t.shape() != [rows, cols] {
            return Err(LlmError::TensorShape {
                name: name.into(),
                expected: vec![rows, cols],
                got: t.shape().to_vec(),
            });
        }
        Ok(t)
    }

    /// A small vector (norm weights, biases) converted to f32 once.
    fn opt_vector(&self, name: &str, len: usize) -> Result<Option<Vec<f32>>> {
        let Some(t) = self.opt_tensor(name)? else {
            return Ok(None);
        };
        if t.numel() != len {
            return Err(LlmError::TensorShape {
                name: name.into(),
                expected: vec![len],
                got: t.shape().to_vec(),
            });
        }
        Ok(Some(t.to_f32_vec()?))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.opt_vector(name, len)?
            .ok_or_else(|| LlmError::MissingTensor(name.into()))
    }
}

impl Weights {
    pub fn load(file: &GgufFile, hp: &HParams) -> Result<Self> {
        let ld = Loader { file };
        let tok_embd_info = file
            .tensor("token_embd.weight")
            .ok_or_else(|| LlmError::MissingTensor("token_embd.weight".into()))?;
        let n_vocab = tok_embd_info.shape().first().copied().unwrap_or(0);
        let tok_embd = ld.matrix("token_embd.weight", n_vocab, hp.n_embd)?;
        let output = match ld.opt_tensor("output.weight")? {
            Some(_) => ld.matrix("output.weight", n_vocab, hp.n_embd)?,
            None => tok_embd.clone(),
        };
        let output_norm = ld.vector("output_norm.weight", hp.n_embd)?;
        let rope_freqs = ld.opt_vector("rope_freqs.weight", hp.n_rot / 2)?;

        let (q, kv, e, ff, hd) = (hp.q_dim(), hp.kv_dim(), hp.n_embd, hp.n_ff, hp.head_dim);
        let mut layers = Vec::with_capacity(hp.n_layer);
        for il in 0..hp.n_layer {
            let n = |s: &str| format!("blk.{il}.{s}");
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n("attn_norm.weight"), e)?,
                wq: ld.matrix(&n("attn_q.weight"), q, e)?,
                wk: ld.matrix(&n("attn_k.weight"), kv, e)?,
                wv: ld.matrix(&n("attn_v.weight"), kv, e)?,
                bq: ld.opt_vector(&n("attn_q.bias"), q)?,
                bk: ld.opt_vector(&n("attn_k.bias"), kv)?,
                bv: ld.opt_vector(&n("attn_v.bias"), kv)?,
                wo: ld.matrix(&n("attn_output.weight"), e, q)?,
                bo: ld.opt_vector(&n("attn_output.bias"), e)?,
                q_norm: ld.opt_vector(&n("attn_q_norm.weight"), hd)?,
                k_norm: ld.opt_vector(&n("attn_k_norm.weight"), hd)?,
                attn_post_norm: ld.opt_vector(&n("post_attention_norm.weight"), e)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), e)?,
                ffn_gate: ld.matrix(&n("ffn_gate.weight"), ff, e)?,
                ffn_up: ld.matrix(&n("ffn_up.weight"), ff, e)?,
                ffn_down: ld.matrix(&n("ffn_down.weight"), e, ff)?,
                ffn_post_norm: ld.opt_vector(&n("post_ffw_norm.weight"), e)?,
            });
        }
        Ok(Self {
            tok_embd,
            output_norm,
            output,
            rope_freqs,
            layers,
        })
    }

    pub fn n_vocab(&self) -> usize {
        self.tok_embd.shape()[0]
    }
}
