//! Support shared by the tests of every crate: where the fixtures and the real models are, and
//! the error measures golden and kernel tests report. A dev-dependency only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The repository root: two levels above the crate under test, whose directory cargo hands
/// the test process at run time. (Not this crate's compile-time directory: checkouts that
/// share a target directory share this crate's artifact, which would then point into
/// whichever checkout built it first.)
pub fn repo_root() -> PathBuf {
    match std::env::var_os("CARGO_MANIFEST_DIR") {
        Some(dir) => Path::new(&dir).join("../.."),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// `tests/fixtures/<rel>` of the repository.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// A fixture's `reference.json`, parsed.
pub fn reference_json(dir: &Path) -> serde_json::Value {
    reference_json_file(&dir.join("reference.json"))
}

/// A JSON file, parsed (panics naming the file).
pub fn reference_json_file(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The f32 tensors of a fixture's `reference.safetensors` (every reference tensor is f32).
pub struct RefTensors {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
}

impl RefTensors {
    /// Reads `path`, panicking with the reason on anything but a well-formed f32 file.
    pub fn load(path: &Path) -> Self {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len])
            .unwrap_or_else(|e| panic!("{}: bad header: {e}", path.display()));
        let data = &bytes[8 + header_len..];
        let mut tensors = BTreeMap::new();
        for (name, info) in header.as_object().expect("header is an object") {
            if name == "__metadata__" {
                continue;
            }
            assert_eq!(info["dtype"], "F32", "{name}: reference tensors are f32");
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let range = info["data_offsets"].as_array().unwrap();
            let (start, end) = (
                range[0].as_u64().unwrap() as usize,
                range[1].as_u64().unwrap() as usize,
            );
            let values = data[start..end]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            tensors.insert(name.clone(), (shape, values));
        }
        Self { tensors }
    }

    /// Shape and values of `name`.
    pub fn get(&self, name: &str) -> (&[usize], &[f32]) {
        let (shape, values) = self
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("reference.safetensors lacks {name}"));
        (shape, values)
    }

    /// Values of `name`, if the file has it.
    pub fn opt(&self, name: &str) -> Option<&[f32]> {
        self.tensors.get(name).map(|(_, v)| v.as_slice())
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn f32s(&self, name: &str) -> Vec<f32> {
        self.get(name).1.to_vec()
    }
}

/// A real model from the cache filled by `scripts/fetch-test-models.sh`
/// (`$MTMD_MODEL_DIR`, else `~/.cache/mtmd-rs/models`), or `None` after a SKIPPED line when
/// it is absent and the run does not require it (`MTMD_REQUIRE_MODELS=1` makes that a failure).
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

/// Normalized mean squared error `Σ(got − want)² / Σwant²` (ggml's `test-backend-ops`
/// measure); the plain squared error when `want` is all zeros.
pub fn nmse(got: &[f32], want: &[f32]) -> f64 {
    let (err, signal) = squared_error_and_signal(got, want);
    if signal == 0.0 { err } else { err / signal }
}

/// [`nmse`] with the signal energy floored at `floor_per_value` per element, so outputs that
/// are all near zero (which carry no signal) are held to an absolute error instead of a
/// relative one.
pub fn nmse_floored(got: &[f32], want: &[f32], floor_per_value: f64) -> f64 {
    let (err, signal) = squared_error_and_signal(got, want);
    let floor = floor_per_value * got.len() as f64;
    err / signal.max(floor).max(f64::MIN_POSITIVE)
}

fn squared_error_and_signal(got: &[f32], want: &[f32]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    got.iter()
        .zip(want)
        .fold((0f64, 0f64), |(err, signal), (&g, &w)| {
            let (g, w) = (f64::from(g), f64::from(w));
            (err + (g - w).powi(2), signal + w * w)
        })
}

/// `(max |ours − reference|, max |reference|)`: golden tests bound the first by a fraction of
/// the second.
pub fn max_err(ours: &[f32], reference: &[f32]) -> (f32, f32) {
    assert_eq!(ours.len(), reference.len(), "lengths differ");
    ours.iter()
        .zip(reference)
        .fold((0f32, 0f32), |(e, s), (a, b)| {
            (e.max((a - b).abs()), s.max(b.abs()))
        })
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Says why a GPU test did not run: panics under `MTMD_REQUIRE_GPU=1` (CI, where a skipped
/// GPU suite must not pass for a tested one), else prints `SKIPPED (no adapter)`.
pub fn skip_without_gpu(why: &str) {
    if std::env::var("MTMD_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        panic!("MTMD_REQUIRE_GPU=1 but no GPU adapter: {why}");
    }
    println!("SKIPPED (no adapter): {why}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures() {
        assert_eq!(nmse(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((nmse(&[2.0], &[1.0]) - 1.0).abs() < 1e-12);
        assert_eq!(nmse(&[0.5], &[0.0]), 0.25);
        assert!((nmse_floored(&[1e-4], &[0.0], 1e-6) - 1e-2).abs() < 1e-9);
        assert_eq!(max_err(&[1.0, -3.0], &[1.5, -2.0]), (1.0, 2.0));
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        let refs = RefTensors::load(&fixture("gemma3/reference.safetensors"));
        let (shape, values) = refs.get("photo.logits");
        assert_eq!(shape.iter().product::<usize>(), values.len());
    }
}
