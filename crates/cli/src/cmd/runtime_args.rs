//! How a model runs, shared by every model-running command: [`ComputeArgs`] (threads, KV
//! cache type; the place for a device flag) and [`RuntimeArgs`] (those plus the context
//! size, for the commands that keep a context). Commands whose defaults or help differ
//! adjust the flattened flags with `#[command(mut_arg(...))]`; the spellings stay here.

use anyhow::Result;
use clap::Args as ClapArgs;
use llm::KvType;

use super::common::set_threads;

#[derive(ClapArgs, Clone, Debug)]
pub struct ComputeArgs {
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// KV cache type: f16 (default) or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
}

impl ComputeArgs {
    /// Sizes the compute thread pool (once per process).
    pub fn apply(&self) -> Result<()> {
        set_threads(self.threads)
    }
}

#[derive(ClapArgs, Clone, Debug)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Context size in tokens (0: the model's, at most 4096).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub ctx_size: usize,
}

impl RuntimeArgs {
    pub fn threads(&self) -> Option<usize> {
        self.compute.threads
    }

    pub fn kv_type(&self) -> KvType {
        self.compute.kv_type
    }
}
