//! Shared helpers of the llm golden tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

#[path = "../../../../tests/support/real_model.rs"]
mod real_model_support;
pub use real_model_support::real_model;

/// max |a - b| and max |b|.
pub fn max_abs_err(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let mut err = 0f32;
    let mut scale = 0f32;
    for (x, y) in a.iter().zip(b) {
        err = err.max((x - y).abs());
        scale = scale.max(y.abs());
    }
    (err, scale)
}

pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}
