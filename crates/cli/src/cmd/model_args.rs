//! Where the text model and its mmproj come from (`ModelArgs`, shared by every command that
//! loads a model): a local file (`-m`) or a Hugging Face style repository
//! (`-hf USER/REPO[:QUANT]`, downloaded into the user cache), plus `--mmproj` / `--no-mmproj`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;

#[derive(ClapArgs, Clone, Debug, Default)]
pub struct ModelArgs {
    /// Text model GGUF (run, chat and serve without -m or -hf use the default model, below).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Download the model (and its mmproj) from a Hugging Face repository: USER/REPO[:QUANT]
    /// (QUANT defaults to Q4_K_M). Also spelled `-hf`.
    #[arg(long = "hf-repo", visible_alias = "hf", conflicts_with = "model")]
    pub hf_repo: Option<String>,
    /// Vision encoder + projector GGUF (needed for --image; -hf downloads the repository's).
    #[arg(long)]
    pub mmproj: Option<PathBuf>,
    /// With -hf: do not download or use the repository's mmproj (text only).
    #[arg(long, conflicts_with = "mmproj")]
    pub no_mmproj: bool,
}

/// Local paths of what a [`ModelArgs`] names.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub model: PathBuf,
    /// `--mmproj`, else the repository's when `-hf` found one (and it was wanted).
    pub mmproj: Option<PathBuf>,
}

/// The model `run`, `chat` and `serve` use when given neither `-m` nor `-hf`: the smallest
/// real vision-language model (SmolVLM 256M, ~0.3 GB with its mmproj), downloaded once into
/// the user cache.
pub const DEFAULT_MODEL: &str = "ggml-org/SmolVLM-256M-Instruct-GGUF:Q8_0";

impl ModelArgs {
    /// Local files like [`resolve`](Self::resolve), but with neither `-m` nor `-hf` the
    /// [`DEFAULT_MODEL`] (saying so on stderr).
    pub fn resolve_or_default(&self, repo_mmproj: bool) -> Result<ResolvedModel> {
        if self.model.is_some() || self.hf_repo.is_some() {
            return self.resolve(repo_mmproj);
        }
        eprintln!("no -m or -hf given: using the default model {DEFAULT_MODEL}");
        let with_default = Self {
            hf_repo: Some(DEFAULT_MODEL.to_string()),
            ..self.clone()
        };
        with_default.resolve(repo_mmproj).map_err(|e| {
            anyhow::anyhow!(
                "the default model {DEFAULT_MODEL} is not available ({e:#}); give a local model with -m FILE (and --mmproj FILE), or -hf USER/REPO"
            )
        })
    }

    /// Local files, downloading them first for `-hf`. `repo_mmproj`: the command has a use
    /// for the repository's mmproj (it is fetched only then, and never with `--mmproj` or
    /// `--no-mmproj`).
    pub fn resolve(&self, repo_mmproj: bool) -> Result<ResolvedModel> {
        let want_mmproj = repo_mmproj && self.mmproj.is_none() && !self.no_mmproj;
        let (model, found) = match (&self.model, &self.hf_repo) {
            (Some(path), _) => (path.clone(), None),
            (None, Some(repo)) => {
                let got = crate::hf::resolve(repo, want_mmproj)?;
                (got.model, got.mmproj)
            }
            (None, None) => bail!("give a model with -m FILE or -hf USER/REPO[:QUANT]"),
        };
        let mmproj = self
            .mmproj
            .clone()
            .or_else(|| found.filter(|_| want_mmproj));
        Ok(ResolvedModel { model, mmproj })
    }
}
