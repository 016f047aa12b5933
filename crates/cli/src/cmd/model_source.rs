//! Where the text model (and its mmproj) come from: a local file (`-m`) or a Hugging Face
//! style repository (`-hf USER/REPO[:QUANT]`, downloaded into the user cache).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args as ClapArgs;

#[derive(ClapArgs, Clone, Debug, Default)]
pub struct ModelSource {
    /// Text model GGUF.
    #[arg(short = 'm', long, required_unless_present = "hf_repo")]
    pub model: Option<PathBuf>,
    /// Download the model (and its mmproj) from a Hugging Face repository: USER/REPO[:QUANT]
    /// (QUANT defaults to Q4_K_M). Also spelled `-hf`.
    #[arg(long = "hf-repo", visible_alias = "hf", conflicts_with = "model")]
    pub hf_repo: Option<String>,
}

/// Local paths of what a [`ModelSource`] names.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub model: PathBuf,
    /// The repository's mmproj, when `-hf` found one.
    pub mmproj: Option<PathBuf>,
}

impl ModelSource {
    /// Local files, downloading them first for `-hf`. `want_mmproj`: also fetch the
    /// repository's mmproj (false when the user gave `--mmproj` or `--no-mmproj`).
    pub fn resolve(&self, want_mmproj: bool) -> Result<ResolvedModel> {
        match (&self.model, &self.hf_repo) {
            (Some(path), _) => Ok(ResolvedModel {
                model: path.clone(),
                mmproj: None,
            }),
            (None, Some(repo)) => {
                let got = crate::hf::resolve(repo, want_mmproj)?;
                Ok(ResolvedModel {
                    model: got.model,
                    mmproj: got.mmproj,
                })
            }
            (None, None) => bail!("give a model with -m FILE or -hf USER/REPO[:QUANT]"),
        }
    }
}
