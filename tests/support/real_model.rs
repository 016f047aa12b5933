//! Where the tests find the real text models (included with `#[path]` by every test that
//! needs them, in any crate).

use std::path::PathBuf;

/// A real model from the cache filled by scripts/fetch-test-models.sh, or `None` (after a
/// SKIPPED line) when it is absent and the run does not require it (MTMD_REQUIRE_MODELS=1).
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
    assert!(
        std::env::var("MTMD_REQUIRE_MODELS").as_deref() != Ok("1"),
        "{} missing and MTMD_REQUIRE_MODELS=1",
        path.display()
    );
    println!("SKIPPED (model not fetched: run scripts/fetch-test-models.sh): {file}");
    None
}
