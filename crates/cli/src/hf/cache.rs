//! Where downloads live, and the per repository + quantization manifest that lets a later
//! run work offline.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use super::repo::{RepoFile, RepoSpec};

/// The user cache of mtmd-rs: `MTMD_CACHE_DIR`, else the platform's cache directory.
pub fn cache_root() -> Result<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("MTMD_CACHE_DIR") {
        return Ok(dir);
    }
    if cfg!(windows) {
        return env("LOCALAPPDATA")
            .map(|d| d.join("mtmd-rs"))
            .ok_or_else(|| anyhow!("cannot find a cache directory: set MTMD_CACHE_DIR"));
    }
    if cfg!(target_os = "macos") {
        return env("HOME")
            .map(|d| d.join("Library").join("Caches").join("mtmd-rs"))
            .ok_or_else(|| anyhow!("cannot find a cache directory: set MTMD_CACHE_DIR"));
    }
    if let Some(xdg) = env("XDG_CACHE_HOME") {
        return Ok(xdg.join("mtmd-rs"));
    }
    env("HOME")
        .map(|d| d.join(".cache").join("mtmd-rs"))
        .ok_or_else(|| anyhow!("cannot find a cache directory: set MTMD_CACHE_DIR or HOME"))
}

/// `{cache}/hf/{user}/{repo}`; the names were checked by [`RepoSpec::parse`].
pub fn repo_dir(root: &Path, spec: &RepoSpec) -> PathBuf {
    root.join("hf").join(&spec.user).join(&spec.repo)
}

/// Joins a repository path (checked by `repo::check_path`) below the repository directory.
pub fn file_path(repo_dir: &Path, file: &RepoFile) -> PathBuf {
    file.path
        .split('/')
        .fold(repo_dir.to_path_buf(), |p, part| p.join(part))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
}

/// What a previous run chose for this repository and quantization.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub repo: String,
    pub quant: String,
    pub model: ManifestFile,
    pub mmproj: Option<ManifestFile>,
}

fn manifest_path(repo_dir: &Path, spec: &RepoSpec) -> PathBuf {
    let quant = spec
        .quant
        .as_deref()
        .unwrap_or("default")
        .to_ascii_lowercase();
    repo_dir.join(format!(".mtmd-manifest-{quant}.json"))
}

pub fn write_manifest(repo_dir: &Path, spec: &RepoSpec, manifest: &Manifest) -> Result<()> {
    let path = manifest_path(repo_dir, spec);
    let json = serde_json::to_string_pretty(manifest)?;
    // Written next to its place and renamed so that a crash never leaves half a manifest.
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The manifest, when there is one whose files are all complete in the cache.
pub fn read_manifest(repo_dir: &Path, spec: &RepoSpec) -> Option<Manifest> {
    let text = fs::read_to_string(manifest_path(repo_dir, spec)).ok()?;
    let manifest: Manifest = serde_json::from_str(&text).ok()?;
    let complete = |f: &ManifestFile| {
        let file = RepoFile {
            path: f.path.clone(),
            size: f.size,
        };
        super::repo::check_path(&f.path).is_ok()
            && fs::metadata(file_path(repo_dir, &file)).is_ok_and(|m| m.len() == f.size)
    };
    let ok = complete(&manifest.model) && manifest.mmproj.as_ref().is_none_or(complete);
    ok.then_some(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip_needs_complete_files() {
        let dir = std::env::temp_dir().join(format!("mtmd-hf-cache-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sub")).unwrap();
        let spec = RepoSpec::parse("u/r:Q8_0").unwrap();
        let manifest = Manifest {
            repo: "u/r".into(),
            quant: "Q8_0".into(),
            model: ManifestFile {
                path: "sub/m.gguf".into(),
                size: 3,
            },
            mmproj: None,
        };
        write_manifest(&dir, &spec, &manifest).unwrap();
        assert_eq!(read_manifest(&dir, &spec), None, "model file missing");
        fs::write(dir.join("sub").join("m.gguf"), b"abc").unwrap();
        assert_eq!(read_manifest(&dir, &spec), Some(manifest));
        let other = RepoSpec::parse("u/r").unwrap();
        assert_eq!(read_manifest(&dir, &other), None, "other quant");
        let _ = fs::remove_dir_all(&dir);
    }
}
