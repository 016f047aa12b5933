//! Shared helpers of the llm golden tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// A real model from the cache filled by scripts/fetch-test-models.sh, or `None` (after a
/// SKIPPED line) when it is absent and the run does not require it.
pub fn real_model(file: &str) -> Option<PathBuf> {
    let dir = std::env::var("MTMD_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/mtmd-rs/models")
        });
    let path = dir.join(file);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("MTMD_REQUIRE_MODELS").as_deref() == Ok("1") {
        panic!("{} missing and MTMD_REQUIRE_MODELS=1", path.display());
    }
    println!("SKIPPED (model not fetched: run scripts/fetch-test-models.sh): {file}");
    None
}

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
