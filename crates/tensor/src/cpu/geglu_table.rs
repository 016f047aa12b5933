//! ggml's CPU GEGLU, which rounds through an f16 GELU table (llama.cpp parity for Gemma).

use half::f16;
use std::sync::OnceLock;

/// ggml's tanh-approximation GELU in f32.
fn gelu_f32(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// GELU of every f16 value, rounded to f16: ggml's CPU GELU is a lookup in this table.
pub fn gelu_f16_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|bits| f16::from_f32(gelu_f32(f16::from_bits(bits).to_f32())).to_f32())
            .collect()
    })
}

/// `out = gelu(gate) * up` exactly as ggml's CPU GEGLU: the gate is rounded to f16, looked
/// up in the f16 GELU table, and saturates outside [-10, 10].
pub fn geglu_f16_table(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let table = gelu_f16_table();
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = if g <= -10.0 {
            0.0
        } else if g >= 10.0 {
            g * u
        } else {
            table[f16::from_f32(g).to_bits() as usize] * u
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_geglu_is_close_to_exact_gelu() {
        let gate: Vec<f32> = (-1200..1200).map(|i| i as f32 / 100.0).collect();
        let up = vec![1.0; gate.len()];
        let mut out = vec![0.0; gate.len()];
        geglu_f16_table(&gate, &up, &mut out);
        for (g, o) in gate.iter().zip(&out) {
            let exact = if *g <= -10.0 {
                0.0
            } else if *g >= 10.0 {
                *g
            } else {
                gelu_f32(*g)
            };
            assert!(
                (o - exact).abs() <= 1e-2 * exact.abs().max(1e-2),
                "{g}: {o} vs {exact}"
            );
        }
    }
}
