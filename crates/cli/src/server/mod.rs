//! `mtmd serve`: an OpenAI-compatible HTTP server over the mtmd library.
//!
//! Layout: `backend.rs` is the boundary (typed requests in, events out); `engine/` implements
//! it with worker threads that own the model; `routes.rs` is `router(state)`, the handlers
//! and SSE; `openai.rs` the wire types; `api_error.rs` the error -> status table;
//! `media_input.rs` turns `image_url` parts into bitmaps; `web.rs` serves the chat page.

pub mod backend;
pub mod engine;

use anyhow::Result;
use clap::Args as ClapArgs;

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub source: crate::cmd::model_source::ModelSource,
}

pub fn run(args: Args) -> Result<()> {
    let _ = args;
    anyhow::bail!("serve is not implemented yet")
}
