//! One module per `mtmd` subcommand, each with `Args` (clap) and `run(Args)`.

pub mod bench;
pub mod bench_parallel;
pub mod chat;
pub mod common;
pub mod dump;
pub mod gguf;
pub mod gpu_probe;
pub mod media;
pub mod model_args;
pub mod run;
pub mod runtime_args;
pub mod sampling_args;
pub mod serve;
pub mod synth;
pub mod synth_layout;
pub mod synth_presets;
pub mod synth_vocab;
pub mod tokenize;
