//! How a model runs, shared by every model-running command: [`ComputeArgs`] (threads, KV
//! cache type, device and GPU offload) and [`RuntimeArgs`] (those plus the context
//! size, for the commands that keep a context). Commands whose defaults or help differ
//! adjust the flattened flags with `#[command(mut_arg(...))]`; the spellings stay here.

use anyhow::Result;
use clap::Args as ClapArgs;
use llm::{Device, KvType};
use tensor::cpu::EncoderPrecision;

use super::common::set_threads;

#[derive(ClapArgs, Clone, Debug)]
pub struct ComputeArgs {
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// KV cache type: f16 (default) or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    /// Where the model runs: auto (a GPU when there is one, else the CPU with a notice), cpu
    /// or gpu (an error when there is none). Mesa's software Vulkan (lavapipe) counts as a GPU
    /// only with MTMD_GPU_ALLOW_CPU_ADAPTER=1.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "gpu"])]
    pub device: String,
    /// Decoder layers on the GPU, counted as llama.cpp counts them (-ngl): the last N layers;
    /// more than the model has also moves the output layer. Default: all. Also spelled -ngl.
    #[arg(long = "gpu-layers", visible_alias = "n-gpu-layers", value_name = "N")]
    pub gpu_layers: Option<usize>,
    /// Keep the media encoder (mmproj) on the CPU when the text model runs on a GPU.
    #[arg(long)]
    pub no_mmproj_offload: bool,
    /// Arithmetic of the media encoder's matmuls on the CPU: f32 (default; matches
    /// llama.cpp within 3e-3) or bf16 (AVX512-BF16 dot products: up to twice as fast
    /// where the CPU runs them at its FMA rate; embeddings move by ~5e-3 of their largest
    /// value). Also MTMD_ENCODER_PRECISION.
    #[arg(long, value_name = "f32|bf16")]
    pub encoder_precision: Option<EncoderPrecision>,
    /// Always read model files into (huge-page) memory instead of mapping them. The
    /// default does so when a file takes at most half of the available memory (generation
    /// streams huge pages faster), and maps it otherwise.
    #[arg(long, conflicts_with = "mmap")]
    pub no_mmap: bool,
    /// Always map model files (zero-copy, shared with the page cache and other processes).
    #[arg(long)]
    pub mmap: bool,
}

impl ComputeArgs {
    /// Sizes the compute thread pool (once per process).
    pub fn apply(&self) -> Result<()> {
        gguf::set_load_mode(match (self.mmap, self.no_mmap) {
            (true, _) => gguf::LoadMode::Map,
            (_, true) => gguf::LoadMode::Read,
            _ => gguf::LoadMode::Auto,
        });
        if let Some(wanted) = self.encoder_precision {
            let got = tensor::cpu::set_encoder_precision(wanted);
            if got != wanted {
                eprintln!(
                    "mtmd: --encoder-precision bf16 needs AVX512-BF16, which this CPU lacks; using f32"
                );
            }
        }
        set_threads(self.threads)
    }

    /// Where the media encoder runs: the model's device unless `--no-mmproj-offload`.
    pub fn encoder_device(&self) -> Result<Device> {
        if self.no_mmproj_offload {
            Ok(Device::Cpu)
        } else {
            self.device()
        }
    }

    /// The device `--device` names (`auto` falls back to the CPU with one notice).
    pub fn device(&self) -> Result<Device> {
        match self.device.as_str() {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Device::gpu().map_err(|e| anyhow::anyhow!("--device gpu: {e}")),
            _ => Ok(Device::auto()),
        }
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
