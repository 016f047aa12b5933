//! Pieces shared by the model-running subcommands.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use llm::Model;

use super::runtime_args::ComputeArgs;

/// Sizes rayon's global pool (the compute threads) once per process.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        if t == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .context("could not start the thread pool")?;
    }
    Ok(())
}

/// Loads a text model and places it on the device `compute` names, with a spinner on stderr
/// when it is a terminal.
pub fn load_model(path: &Path, compute: &ComputeArgs) -> Result<Model> {
    let device = compute.device()?;
    let spinner = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("loading {}", path.display()));
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let model = Model::load(path).map_err(|e| {
        // GGUF errors already name the file; others get it prepended.
        let msg = e.to_string();
        if msg.contains(&*path.to_string_lossy()) {
            anyhow::anyhow!(msg)
        } else {
            anyhow::anyhow!("{}: {msg}", path.display())
        }
    });
    let model = model.and_then(|mut m| {
        if device.is_gpu() {
            if let Some(pb) = &spinner {
                pb.set_message(format!("uploading {} to {device}", path.display()));
            }
            m.place(&device, compute.gpu_layers)
                .map_err(|e| anyhow::anyhow!("placing the model on {device}: {e}"))?;
        }
        Ok(m)
    });
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    model
}
