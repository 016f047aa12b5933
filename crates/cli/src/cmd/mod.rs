//! One module per `mtmd` subcommand, each with `Args` (clap) and `run(Args)`.

pub mod gguf;
