//! `mtmd tokenize`: token ids of a text, as the model's tokenizer produces them.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
    /// Model GGUF (only its tokenizer is read).
    #[arg(short = 'm', long)]
    model: PathBuf,
    /// Do not add BOS/EOS even when the model's metadata asks for them.
    #[arg(long)]
    no_bos: bool,
    /// Treat special-token text such as `<|im_start|>` as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// The text to tokenize.
    text: String,
}

pub fn run(args: Args) -> Result<()> {
    let file =
        gguf::GgufFile::open(&args.model).with_context(|| format!("{}", args.model.display()))?;
    let tokenizer = llm::tokenizer::Tokenizer::from_gguf(&file)
        .with_context(|| format!("{}: tokenizer", args.model.display()))?;
    let ids = tokenizer.tokenize(&args.text, !args.no_bos, !args.no_parse_special);
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
