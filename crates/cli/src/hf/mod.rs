//! `-hf USER/REPO[:QUANT]`: pick the GGUF files of a Hugging Face style repository,
//! download them into the user cache (resumable), and fall back to the cache offline.

mod cache;
mod download;
mod repo;

use std::path::PathBuf;

use anyhow::{Result, anyhow};

use cache::{Manifest, ManifestFile};
use download::{Client, mib};
use repo::{RepoFile, RepoSpec};

/// Local paths of the chosen files.
#[derive(Debug, Clone)]
pub struct Downloaded {
    pub model: PathBuf,
    pub mmproj: Option<PathBuf>,
}

/// Lists the repository, chooses the model for the quantization (and the mmproj when
/// `want_mmproj`), downloads what the cache lacks. When the server cannot be reached, the
/// files a previous run chose for the same `spec` are used.
pub fn resolve(spec: &str, want_mmproj: bool) -> Result<Downloaded> {
    let spec = RepoSpec::parse(spec)?;
    let root = cache::cache_root()?;
    let dir = cache::repo_dir(&root, &spec);
    let client = Client::from_env();
    let repo_name = spec.name();

    let json = match client.listing(&spec) {
        Ok(json) => json,
        Err(e) if e.is_unreachable() => {
            return match cache::read_manifest(&dir, &spec) {
                Some(manifest) => Ok(offline(&dir, &manifest, want_mmproj)),
                None => Err(anyhow!("{e}; no cached copy of {repo_name} to use offline")),
            };
        }
        Err(e) => return Err(e.into()),
    };
    let files = repo::parse_listing(&json)?;

    let model = repo::choose_model(&files, &repo_name, spec.quant.as_deref())?;
    let mmproj = if want_mmproj {
        let found = repo::choose_mmproj(&files);
        if found.is_none() {
            eprintln!("note: {repo_name} has no mmproj file: text only");
        }
        found
    } else {
        None
    };

    let model_path = fetch(&client, &spec, &dir, model)?;
    let mmproj_path = mmproj.map(|f| fetch(&client, &spec, &dir, f)).transpose()?;

    // A run that skipped the mmproj keeps the one an earlier run recorded.
    let previous_mmproj = cache::read_manifest(&dir, &spec).and_then(|m| m.mmproj);
    let manifest = Manifest {
        repo: repo_name,
        quant: spec
            .quant
            .clone()
            .unwrap_or_else(|| repo::DEFAULT_QUANT.to_string()),
        model: entry(model),
        mmproj: mmproj.map(entry).or(previous_mmproj),
    };
    if let Err(e) = cache::write_manifest(&dir, &spec, &manifest) {
        // Only the offline fallback depends on it: worth a warning, not a failure.
        eprintln!("warning: {e:#}");
    }
    Ok(Downloaded {
        model: model_path,
        mmproj: mmproj_path,
    })
}

fn entry(f: &RepoFile) -> ManifestFile {
    ManifestFile {
        path: f.path.clone(),
        size: f.size,
    }
}

fn offline(dir: &std::path::Path, manifest: &Manifest, want_mmproj: bool) -> Downloaded {
    let path = |f: &ManifestFile| {
        cache::file_path(
            dir,
            &RepoFile {
                path: f.path.clone(),
                size: f.size,
            },
        )
    };
    let model = path(&manifest.model);
    eprintln!("offline: using cached {}", model.display());
    let mmproj = if want_mmproj {
        manifest.mmproj.as_ref().map(path)
    } else {
        None
    };
    if let Some(p) = &mmproj {
        eprintln!("offline: using cached {}", p.display());
    }
    Downloaded { model, mmproj }
}

/// The cached file when complete, else a download of it.
fn fetch(
    client: &Client,
    spec: &RepoSpec,
    dir: &std::path::Path,
    file: &RepoFile,
) -> Result<PathBuf> {
    let dest = cache::file_path(dir, file);
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() == file.size) {
        return Ok(dest);
    }
    eprintln!(
        "downloading {} ({}) from {} into {}",
        file.path,
        mib(file.size),
        client.endpoint(),
        dest.display()
    );
    client.download(spec, file, &dest)?;
    Ok(dest)
}
