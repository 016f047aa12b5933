//! `mtmd`: the command-line front end. One file per subcommand under `cmd/`; adding a
//! command = one module there + one variant in [`Command`] + one arm in [`run`].

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod hf;

#[derive(Parser)]
#[command(
    name = "mtmd",
    version,
    about = "Multimodal inference (GGUF models + mmproj)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata and tensors, or extract one tensor as f32 safetensors.
    Gguf(cmd::gguf::Args),
    /// Generate text from a prompt or a conversation.
    Run(cmd::run::Args),
    /// Print the token ids of a text as a JSON array.
    Tokenize(cmd::tokenize::Args),
    /// Measure prompt processing and generation speed (llama-bench style).
    Bench(cmd::bench::Args),
    /// Chat interactively on stdin (`/image PATH`, `/clear`, `/quit`).
    Chat(cmd::chat::Args),
    /// Dump a multimodal prompt's chunks, embeddings, logits and greedy tokens (golden tests).
    Dump(cmd::dump::Args),
    /// Serve the model over an OpenAI-compatible HTTP API with a web chat page.
    Serve(cmd::serve::Args),
    /// Write a text-model GGUF and an mmproj GGUF with random weights and a real model's
    /// dimensions, keys and tensor names (for speed comparisons).
    Synth(cmd::synth::Args),
    /// Open the GPU and print `ok DEVICE` or `none WHY` (what `--device auto` runs first).
    #[command(name = "gpu-probe", hide = true)]
    GpuProbe,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gguf(args) => cmd::gguf::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Tokenize(args) => cmd::tokenize::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Chat(args) => cmd::chat::run(args),
        Command::Dump(args) => cmd::dump::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Synth(args) => cmd::synth::run(args),
        Command::GpuProbe => cmd::gpu_probe::run(),
    }
}

/// Every failure is reported the same way: one line `error: ...` on stderr, exit status 1.
fn fail(message: &str) -> ExitCode {
    let one_line: Vec<&str> = message.split_whitespace().collect();
    eprintln!("error: {}", one_line.join(" "));
    ExitCode::FAILURE
}

/// llama.cpp's two-letter flags and the long flags they stand for (clap has no two-letter
/// short flags).
const LLAMA_SHORT_FLAGS: [(&str, &str); 3] = [
    ("-hf", "--hf-repo"),
    ("-np", "--parallel"),
    ("-ngl", "--gpu-layers"),
];

/// Rewrites llama.cpp's `-hf REPO` / `-hf=REPO` (and `-np N`, `-ngl N`) to their long forms.
/// Arguments after `--` are left alone.
fn rewrite_short_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut after_dashes = false;
    args.into_iter()
        .map(|arg| {
            if after_dashes {
                return arg;
            }
            let Some(s) = arg.to_str() else { return arg };
            if s == "--" {
                after_dashes = true;
                return arg;
            }
            for (short, long) in LLAMA_SHORT_FLAGS {
                if s == short {
                    return OsString::from(long);
                }
                if let Some(value) = s.strip_prefix(short).and_then(|v| v.strip_prefix('=')) {
                    return OsString::from(format!("{long}={value}"));
                }
            }
            arg
        })
        .collect()
}

/// Freed large activation buffers are reused instead of being unmapped and faulted back in
/// each encoder layer (`tensor::alloc`).
#[global_allocator]
static ALLOC: tensor::alloc::ReuseLarge = tensor::alloc::ReuseLarge;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_from(rewrite_short_flags(std::env::args_os())) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap renders "error: <what, maybe over lines>\n\nUsage: ...": keep <what>.
            let rendered = e.to_string();
            let what = rendered.split("\n\n").next().unwrap_or("invalid arguments");
            return fail(what.trim_start_matches("error:").trim());
        }
    };
    tensor::Device::set_auto_probe(cmd::gpu_probe::probe);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(args: &[&str]) -> Vec<String> {
        rewrite_short_flags(args.iter().map(OsString::from))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn hf_short_flag_is_rewritten() {
        assert_eq!(
            rewrite(&["mtmd", "run", "-hf", "u/r:Q8_0", "-p", "hi"]),
            ["mtmd", "run", "--hf-repo", "u/r:Q8_0", "-p", "hi"]
        );
        assert_eq!(rewrite(&["mtmd", "-hf=u/r"]), ["mtmd", "--hf-repo=u/r"]);
        assert_eq!(
            rewrite(&["mtmd", "-hfx", "--", "-hf"]),
            ["mtmd", "-hfx", "--", "-hf"]
        );
        let cli = Cli::try_parse_from(rewrite_short_flags(
            ["mtmd", "run", "-hf", "u/r", "-p", "hi"].map(OsString::from),
        ));
        assert!(cli.is_ok());
        assert_eq!(
            rewrite(&["mtmd", "serve", "-m", "x.gguf", "-np", "8"]),
            ["mtmd", "serve", "-m", "x.gguf", "--parallel", "8"]
        );
        let cli = Cli::try_parse_from(rewrite_short_flags(
            ["mtmd", "serve", "-m", "x.gguf", "-np", "2"].map(OsString::from),
        ));
        assert!(cli.is_ok());
    }
}
