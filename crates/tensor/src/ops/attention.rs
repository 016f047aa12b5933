//! Scaled dot-product attention with a position mask, GQA and an optional soft cap.
//!
//! Contract: for query `i`, head `h` (KV head `g = h / (n_head / n_kv_head)`):
//! `s_j = scale · q_ih·k_jg`, then `s_j = c · tanh(s_j / c)` with a soft cap `c`, then
//! `s_j = -inf` where [`AttnMask::visible`] is false; `out_ih = Σ_j softmax(s)_j · v_jg`,
//! and 0 when no key is visible.

use crate::{DType, Result, Tensor, TensorError};

// ---------------------------------------------------------------- contract

/// K or V rows, `[n_kv, n_kv_head, head_dim]`.
#[derive(Clone, Copy, Debug)]
pub enum KvData<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
}

impl KvData<'_> {
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(x) => x.len(),
            KvData::F16(x) => x.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which keys each query sees, from token positions (llama.cpp's KV-cache mask rules).
///
/// Key `j` is visible to query `i` iff
/// `(!causal || k_pos[j] <= q_pos[i]) && (window.is_none() || q_pos[i] - k_pos[j] < window)`,
/// or both carry the same non-zero group id (bidirectional spans such as Gemma 3 images).
#[derive(Clone, Copy, Debug)]
pub struct AttnMask<'a> {
    pub q_pos: &'a [i32],
    pub k_pos: &'a [i32],
    pub causal: bool,
    /// Sliding window (llama.cpp's standard SWA): visible iff `q_pos - k_pos < window`.
    pub window: Option<usize>,
    pub q_group: Option<&'a [u32]>,
    pub k_group: Option<&'a [u32]>,
}

impl<'a> AttnMask<'a> {
    /// Every key visible to every query (encoders).
    pub fn full(q_pos: &'a [i32], k_pos: &'a [i32]) -> Self {
        Self {
            q_pos,
            k_pos,
            causal: false,
            window: None,
            q_group: None,
            k_group: None,
        }
    }

    /// Causal by position (decoders).
    pub fn causal(q_pos: &'a [i32], k_pos: &'a [i32]) -> Self {
        Self {
            causal: true,
            ..Self::full(q_pos, k_pos)
        }
    }

    pub fn n_q(&self) -> usize {
        self.q_pos.len()
    }

    pub fn n_kv(&self) -> usize {
        self.k_pos.len()
    }

    /// Whether query `i` sees key `j`.
    #[inline]
    pub fn visible(&self, i: usize, j: usize) -> bool {
        let (lo, hi) = self.position_range(i);
        let kp = self.k_pos[j] as i64;
        (lo <= kp && kp <= hi)
            || self
                .group_of(i)
                .is_some_and(|g| self.k_group.is_some_and(|kg| kg[j] == g))
    }

    /// The key positions `lo..=hi` query `i` sees by position alone (causality and window).
    pub(crate) fn position_range(&self, i: usize) -> (i64, i64) {
        let qp = self.q_pos[i] as i64;
        let hi = if self.causal { qp } else { i64::MAX };
        // q - k < window  <=>  k >= q - window + 1
        let lo = self.window.map_or(i64::MIN, |w| qp - w as i64 + 1);
        (lo, hi)
    }

    /// Query `i`'s bidirectional group, if it has one (and keys carry groups at all).
    pub(crate) fn group_of(&self, i: usize) -> Option<u32> {
        let g = self.q_group?[i];
        (g != 0 && self.k_group.is_some()).then_some(g)
    }

    /// The smallest and largest position of keys `j0..j0 + nk` (for [`Self::fill_bias_in`],
    /// computed once per key block for all its queries).
    pub(crate) fn key_range(&self, j0: usize, nk: usize) -> (i64, i64) {
        self.k_pos[j0..j0 + nk]
            .iter()
            .fold((i64::MAX, i64::MIN), |(a, b), &p| {
                (a.min(p as i64), b.max(p as i64))
            })
    }

    /// Whether query `i` sees every key whose position lies in `key_range` (by position
    /// alone; a group only ever adds keys).
    pub(crate) fn sees_all(&self, i: usize, (kmin, kmax): (i64, i64)) -> bool {
        let (lo, hi) = self.position_range(i);
        lo <= kmin && kmax <= hi
    }

    /// Writes the additive mask of query `i` against keys `j0..j0 + nk` (whose positions span
    /// `key_range(j0, nk)`) into `bias[..nk]` (0 visible, -inf hidden; the rest of `bias`
    /// hidden); returns whether any is visible.
    pub(crate) fn fill_bias_in(
        &self,
        i: usize,
        j0: usize,
        nk: usize,
        (kmin, kmax): (i64, i64),
        bias: &mut [f32],
    ) -> bool {
        let k_pos = &self.k_pos[j0..j0 + nk];
        let (lo, hi) = self.position_range(i);
        let group = self.group_of(i);
        bias[nk..].fill(f32::NEG_INFINITY);
        if self.sees_all(i, (kmin, kmax)) {
            bias[..nk].fill(0.0);
            return nk > 0;
        }
        if group.is_none() && (kmax < lo || kmin > hi) {
            bias[..nk].fill(f32::NEG_INFINITY);
            return false;
        }
        let k_group = self.k_group.map(|g| &g[j0..j0 + nk]);
        let mut any = false;
        for (jj, (b, &kp)) in bias[..nk].iter_mut().zip(k_pos).enumerate() {
            let kp = kp as i64;
            let vis = (lo <= kp && kp <= hi)
                || group.is_some_and(|g| k_group.is_some_and(|kg| kg[jj] == g));
            *b = if vis { 0.0 } else { f32::NEG_INFINITY };
            any |= vis;
        }
        any
    }

    /// Panics with a clear message on slices that disagree (caller bugs).
    pub(crate) fn check(&self) {
        if let Some(g) = self.q_group {
            assert_eq!(g.len(), self.n_q(), "attention: q_group length");
        }
        if let Some(g) = self.k_group {
            assert_eq!(g.len(), self.n_kv(), "attention: k_group length");
        }
    }
}

/// Head geometry and score transform.
#[derive(Clone, Copy, Debug)]
pub struct AttnParams {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` (usually `1/sqrt(head_dim)`).
    pub scale: f32,
    /// Soft cap `c`: scores become `c · tanh(scale · q·k / c)` (Gemma 2).
    pub softcap: Option<f32>,
}

impl AttnParams {
    /// Plain multi-head attention with `1/sqrt(head_dim)` scaling.
    pub fn mha(n_head: usize, head_dim: usize) -> Self {
        Self {
            n_head,
            n_kv_head: n_head,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            softcap: None,
        }
    }
}

// ---------------------------------------------------------------- op and reference

fn mismatch(detail: String) -> TensorError {
    TensorError::ShapeMismatch {
        op: "attention",
        detail,
    }
}

/// Checks that `t` holds `rows × heads × d` values with `rows` outermost.
fn check_rows(name: &str, t: &Tensor, rows: usize, heads: usize, d: usize) -> Result<()> {
    let ok = t.shape().first() == Some(&rows) && t.numel() == rows * heads * d;
    if !ok {
        return Err(mismatch(format!(
            "{name} must be [{rows}, {heads}, {d}] (or [{rows}, {}]), got {:?}",
            heads * d,
            t.shape()
        )));
    }
    Ok(())
}

/// Attention over tensors: `q` `[n_q, n_head, d]` (any float dtype), `k`/`v`
/// `[n_kv, n_kv_head, d]` in f32 or f16 (other dtypes are converted to f32); the result has
/// `q`'s shape in f32. `n_q`/`n_kv` come from the mask's position slices.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &AttnMask,
    p: &AttnParams,
) -> Result<Tensor> {
    let (n_q, n_kv, d) = (mask.n_q(), mask.n_kv(), p.head_dim);
    if p.n_kv_head == 0 || !p.n_head.is_multiple_of(p.n_kv_head) {
        return Err(mismatch(format!(
            "n_head {} is not a multiple of n_kv_head {}",
            p.n_head, p.n_kv_head
        )));
    }
    check_rows("q", q, n_q, p.n_head, d)?;
    check_rows("k", k, n_kv, p.n_kv_head, d)?;
    check_rows("v", v, n_kv, p.n_kv_head, d)?;
    for (name, g, n) in [
        ("q_group", mask.q_group, n_q),
        ("k_group", mask.k_group, n_kv),
    ] {
        if let Some(g) = g
            && g.len() != n
        {
            return Err(mismatch(format!(
                "{name} has {} ids for {n} tokens",
                g.len()
            )));
        }
    }

    let qd = q.to_f32_vec()?;
    let (kd, vd) = (OwnedKv::of(k)?, OwnedKv::of(v)?);
    let mut out = vec![0f32; qd.len()];
    crate::cpu::attention(&qd, kd.view(), vd.view(), mask, p, &mut out);
    Tensor::from_f32(q.shape(), &out)
}

/// K or V as the kernel reads it: f16 host tensors stay f16, everything else becomes f32.
enum OwnedKv {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
}

impl OwnedKv {
    fn of(t: &Tensor) -> Result<Self> {
        if t.dtype() != DType::F16 || t.storage().host_bytes().is_none() {
            return Ok(OwnedKv::F32(t.to_f32_vec()?));
        }
        // Copied value by value, so the storage's alignment never matters.
        let t = t.contiguous()?;
        let bytes = t.host_bytes()?;
        Ok(OwnedKv::F16(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]))
                .collect(),
        ))
    }

    fn view(&self) -> KvData<'_> {
        match self {
            OwnedKv::F32(x) => KvData::F32(x),
            OwnedKv::F16(x) => KvData::F16(x),
        }
    }
}

/// The explicit `n_q × n_kv` visibility matrix of a mask (row-major), straight from the
/// contract's formula (independent of the kernel's fast paths).
pub fn mask_matrix(mask: &AttnMask) -> Vec<bool> {
    let mut m = Vec::with_capacity(mask.n_q() * mask.n_kv());
    for i in 0..mask.n_q() {
        for j in 0..mask.n_kv() {
            let (qp, kp) = (mask.q_pos[i] as i64, mask.k_pos[j] as i64);
            let causal_ok = !mask.causal || kp <= qp;
            let window_ok = mask.window.is_none_or(|w| qp - kp < w as i64);
            let same_group = match (mask.q_group, mask.k_group) {
                (Some(qg), Some(kg)) => qg[i] != 0 && qg[i] == kg[j],
                _ => false,
            };
            m.push((causal_ok && window_ok) || same_group);
        }
    }
    m
}

/// Scalar reference: materialises the score matrix with an explicit mask matrix, in f64.
pub fn reference(q: &[f32], k: &[f32], v: &[f32], mask: &AttnMask, p: &AttnParams) -> Vec<f32> {
    let (n_q, n_kv, d) = (mask.n_q(), mask.n_kv(), p.head_dim);
    let group = p.n_head / p.n_kv_head;
    let visible = mask_matrix(mask);
    let mut out = vec![0f32; n_q * p.n_head * d];
    let mut s = vec![0f64; n_kv];
    for i in 0..n_q {
        for h in 0..p.n_head {
            let g = h / group;
            let qi = &q[(i * p.n_head + h) * d..][..d];
            let mut max = f64::NEG_INFINITY;
            for j in 0..n_kv {
                let kj = &k[(j * p.n_kv_head + g) * d..][..d];
                let dot: f64 = qi.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum();
                let mut x = dot * p.scale as f64;
                if let Some(c) = p.softcap.filter(|&c| c != 0.0) {
                    x = c as f64 * (x / c as f64).tanh();
                }
                s[j] = if visible[i * n_kv + j] {
                    x
                } else {
                    f64::NEG_INFINITY
                };
                max = max.max(s[j]);
            }
            if max == f64::NEG_INFINITY {
                continue;
            }
            let total: f64 = s.iter().map(|x| (x - max).exp()).sum();
            let o = &mut out[(i * p.n_head + h) * d..][..d];
            for j in 0..n_kv {
                let w = (s[j] - max).exp() / total;
                let vj = &v[(j * p.n_kv_head + g) * d..][..d];
                for (o, x) in o.iter_mut().zip(vj) {
                    *o = (*o as f64 + w * *x as f64) as f32;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(n: usize) -> Vec<i32> {
        (0..n as i32).collect()
    }

    #[test]
    fn kernel_visibility_matches_contract_formula() {
        let q_pos = [0, 3, 7, 7, 12, -2];
        let k_pos = [0, 1, 2, 3, 5, 7, 8, 11, 12, 13];
        let q_group = [0, 1, 1, 0, 2, 0];
        let k_group = [0, 1, 1, 1, 0, 0, 2, 2, 0, 2];
        for causal in [false, true] {
            for window in [None, Some(1), Some(3), Some(100)] {
                for groups in [false, true] {
                    let mask = AttnMask {
                        q_pos: &q_pos,
                        k_pos: &k_pos,
                        causal,
                        window,
                        q_group: groups.then_some(&q_group[..]),
                        k_group: groups.then_some(&k_group[..]),
                    };
                    let want = mask_matrix(&mask);
                    for i in 0..q_pos.len() {
                        for j in 0..k_pos.len() {
                            assert_eq!(
                                mask.visible(i, j),
                                want[i * k_pos.len() + j],
                                "{mask:?} ({i},{j})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tensor_op_matches_reference_with_f16_kv() {
        let (n_q, n_kv, nh, nkv, d) = (3, 5, 4, 2, 8);
        let f = |n: usize, s: f32| (0..n).map(|i| (i as f32 * s).sin()).collect::<Vec<_>>();
        let qd = f(n_q * nh * d, 0.7);
        let kd = f(n_kv * nkv * d, 1.3);
        let vd = f(n_kv * nkv * d, 0.4);
        let qp = [2, 3, 4];
        let kp = [0, 1, 2, 3, 4];
        let mask = AttnMask::causal(&qp, &kp);
        let p = AttnParams {
            n_kv_head: nkv,
            ..AttnParams::mha(nh, d)
        };
        let to16 = |x: &[f32]| -> Vec<f32> {
            x.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect()
        };
        let bytes16 = |x: &[f32]| -> Vec<u8> {
            x.iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect()
        };
        let q = Tensor::from_f32(&[n_q, nh, d], &qd).unwrap();
        let mk = |x: &[f32]| {
            let st = crate::Storage::Host(crate::HostBytes::from_bytes(&bytes16(x)));
            Tensor::new(DType::F16, &[n_kv, nkv, d], st).unwrap()
        };
        let got = attention(&q, &mk(&kd), &mk(&vd), &mask, &p).unwrap();
        let want = reference(&qd, &to16(&kd), &to16(&vd), &mask, &p);
        for (a, b) in got.as_f32().unwrap().iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        let bad = Tensor::from_f32(&[n_q, nh, d + 1], &f(n_q * nh * (d + 1), 1.0)).unwrap();
        assert!(attention(&bad, &mk(&kd), &mk(&vd), &mask, &p).is_err());
    }

    fn visible_matrix(m: &AttnMask) -> Vec<Vec<bool>> {
        (0..m.n_q())
            .map(|i| (0..m.n_kv()).map(|j| m.visible(i, j)).collect())
            .collect()
    }

    #[test]
    fn causal_mask_is_lower_triangular_by_position() {
        let p = pos(4);
        let m = visible_matrix(&AttnMask::causal(&p, &p));
        for i in 0..4 {
            for j in 0..4 {
                assert_eq!(m[i][j], j <= i, "({i},{j})");
            }
        }
    }

    #[test]
    fn window_keeps_keys_closer_than_window() {
        let p = pos(6);
        let mask = AttnMask {
            window: Some(2),
            ..AttnMask::causal(&p, &p)
        };
        let m = visible_matrix(&mask);
        for i in 0..6 {
            for j in 0..6 {
                assert_eq!(m[i][j], j <= i && i - j < 2, "({i},{j})");
            }
        }
        // Without causality the window only limits the past.
        let mask = AttnMask {
            window: Some(2),
            ..AttnMask::full(&p, &p)
        };
        assert!(mask.visible(0, 5) && !mask.visible(5, 3) && mask.visible(5, 4));
    }

    #[test]
    fn groups_open_bidirectional_spans() {
        let p = pos(5);
        let g = [0, 1, 1, 1, 0];
        let mask = AttnMask {
            q_group: Some(&g),
            k_group: Some(&g),
            ..AttnMask::causal(&p, &p)
        };
        assert!(mask.visible(1, 3), "image token sees a later image token");
        assert!(!mask.visible(0, 1), "text before the image stays causal");
        assert!(mask.visible(4, 3) && !mask.visible(3, 4));
        assert!(!mask.visible(0, 4), "group 0 means no group");
    }
}
