//! `mtmd`: the command-line front end. One file per subcommand under `cmd/`; adding a
//! command = one module there + one variant in [`Command`] + one arm in [`run`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(name = "mtmd", version, about = "Multimodal inference (GGUF models + mmproj)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show a GGUF file's metadata and tensors, or extract one tensor as f32 safetensors.
    Gguf(cmd::gguf::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Gguf(args) => cmd::gguf::run(args),
    }
}

/// Every failure is reported the same way: one line `error: ...` on stderr, exit status 1.
fn fail(message: &str) -> ExitCode {
    let one_line: Vec<&str> = message.split_whitespace().collect();
    eprintln!("error: {}", one_line.join(" "));
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap renders "error: <what>\n\nUsage: ...": keep the first line only.
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            return fail(first.trim_start_matches("error:").trim());
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}
