//! Shared by the GPU test binaries: the device (or a skip), NMSE checks, seeded values.
#![allow(dead_code)]

use std::sync::Arc;

use tensor::gpu::GpuContext;
use tensor::{Device, Storage, Tensor};
use testkit::nmse;

pub const NMSE_MAX: f64 = 1e-6;

/// The shared GPU, or `None` after printing the skip line (or panicking under
/// `MTMD_REQUIRE_GPU=1`).
pub fn gpu_or_skip() -> Option<Arc<GpuContext>> {
    match Device::gpu() {
        Ok(Device::Gpu(ctx)) => Some(ctx),
        other => {
            let why = match other {
                Err(e) => e.to_string(),
                Ok(d) => format!("got {d}"),
            };
            if std::env::var("MTMD_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("MTMD_REQUIRE_GPU=1 but no GPU adapter: {why}");
            }
            // Once per test (proptest cases share their test's thread).
            thread_local!(static SAID: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
            if !SAID.replace(true) {
                println!("SKIPPED (no adapter)");
            }
            None
        }
    }
}

pub fn check(op: &str, got: &[f32], want: &[f32]) {
    let e = nmse(got, want);
    if std::env::var_os("MTMD_GPU_REPORT").is_some() {
        eprintln!("NMSE {op}: {e:.3e} ({} values)", want.len());
    }
    let first_bad = got
        .iter()
        .zip(want)
        .position(|(g, w)| (g - w).abs() > 1e-3 * (1.0 + w.abs()));
    assert!(
        e <= NMSE_MAX,
        "{op}: NMSE {e:.3e} > {NMSE_MAX:e}; first differing index {first_bad:?}: got {:?}, want {:?}",
        first_bad.map(|i| got[i]),
        first_bad.map(|i| want[i])
    );
}

/// Deterministic values in [-scale, scale) from a seed (xorshift).
pub fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    values(seed, len, 1.0)
        .iter()
        .map(|v| (v.to_bits() >> 7) as u8)
        .collect()
}

pub fn on_gpu(ctx: &GpuContext, shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::from_f32(shape, data).unwrap().to_gpu(ctx).unwrap()
}

pub fn host(t: &Tensor) -> Vec<f32> {
    assert!(
        matches!(t.storage(), Storage::Gpu(_)),
        "result should stay on the GPU"
    );
    t.to_f32_vec().unwrap()
}
