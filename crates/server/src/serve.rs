//! `mtmd serve`: an OpenAI-compatible HTTP server over the mtmd library.
//!
//! Layout: `backend.rs` is the boundary (typed requests in, events out); `engine/` implements
//! it with worker threads that own the model; `routes.rs` is `router(state)`, the handlers
//! and SSE; `openai.rs` the wire types; `api_error.rs` the error -> status table;
//! `media_input.rs` turns `image_url` parts into bitmaps; `metrics_text.rs` renders
//! `/metrics`; `web.rs` serves the chat page.

pub mod api_error;
pub mod backend;
pub mod engine;
pub mod media_input;
pub mod metrics_text;
pub mod openai;
pub mod routes;
mod web;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Args as ClapArgs;
use llm::KvType;

use engine::{Engine, EngineConfig};
use routes::{AppState, ServerOptions, router};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    pub source: crate::cmd::model_source::ModelSource,
    /// Multimodal projector GGUF (vision encoder); enables image input.
    #[arg(long, conflicts_with = "no_mmproj")]
    pub mmproj: Option<PathBuf>,
    /// Do not load an mmproj, not even the one `-hf` finds.
    #[arg(long)]
    pub no_mmproj: bool,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests served at once (slots); later ones wait in a queue. Also spelled `-np`.
    #[arg(long, visible_alias = "np", default_value_t = 4)]
    pub parallel: usize,
    /// Context size of each slot in tokens (0: the model's, at most 4096).
    #[arg(short = 'c', long, default_value_t = 0)]
    pub ctx_size: usize,
    /// KV cache type: f16 (default) or f32.
    #[arg(long, default_value = "f16")]
    pub kv_type: KvType,
    /// Compute threads (default: all cores).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Require `Authorization: Bearer KEY` on /v1/* and /props (default: $MTMD_API_KEY).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Model name clients use (default: the model file's stem).
    #[arg(long)]
    pub alias: Option<String>,
    /// Memory bound of the image-embedding cache, in MB (0: no cache).
    #[arg(long, default_value_t = 256)]
    pub media_cache_mb: usize,
    /// Largest accepted request body, in MB (images travel inside it as base64).
    #[arg(long, default_value_t = 64)]
    pub max_body_mb: usize,
    /// Also fetch http(s) image URLs (never from loopback or private addresses).
    #[arg(long)]
    pub allow_remote_media: bool,
    /// Lower bound of tokens per image, for models with dynamic resolution.
    #[arg(long)]
    pub image_min_tokens: Option<u32>,
    /// Upper bound of tokens per image, for models with dynamic resolution.
    #[arg(long)]
    pub image_max_tokens: Option<u32>,
}

pub fn run(args: Args) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if args.max_body_mb == 0 {
        bail!("--max-body-mb must be at least 1");
    }
    crate::cmd::common::set_threads(args.threads)?;
    let want_mmproj = args.mmproj.is_none() && !args.no_mmproj;
    let resolved = args.source.resolve(want_mmproj)?;
    let mmproj = match (args.no_mmproj, args.mmproj) {
        (true, _) => None,
        (false, Some(path)) => Some(path),
        (false, None) => resolved.mmproj,
    };
    for path in std::iter::once(&resolved.model).chain(mmproj.as_ref()) {
        if !path.is_file() {
            bail!("{}: no such file", path.display());
        }
    }
    let config = EngineConfig {
        model_path: resolved.model,
        mmproj_path: mmproj,
        alias: args.alias,
        n_ctx: args.ctx_size,
        n_slots: args.parallel,
        kv_type: args.kv_type,
        media_cache_bytes: args.media_cache_mb.saturating_mul(1 << 20),
        n_threads: args.threads,
        image_min_tokens: args.image_min_tokens,
        image_max_tokens: args.image_max_tokens,
    };
    let options = ServerOptions {
        api_key: args
            .api_key
            .or_else(|| std::env::var("MTMD_API_KEY").ok())
            .filter(|k| !k.is_empty()),
        max_body_bytes: args.max_body_mb.saturating_mul(1 << 20),
        allow_remote_media: args.allow_remote_media,
        log_requests: true,
    };
    // The HTTP side is light (the engine has its own threads): two workers are plenty.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let result = runtime.block_on(serve(&args.host, args.port, config, options));
    // A model still loading (Ctrl-C during load) must not hold the exit.
    runtime.shutdown_background();
    result
}

/// How long open streams may take to finish after Ctrl-C / SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

async fn serve(host: &str, port: u16, config: EngineConfig, options: ServerOptions) -> Result<()> {
    // Bind before loading: clients see 503 "Loading model" instead of connection refused.
    let listener = tokio::net::TcpListener::bind((host, port))
        .await
        .with_context(|| format!("cannot listen on {host}:{port}"))?;
    let addr = listener.local_addr().context("no local address")?;
    eprintln!("listening on http://{addr}");

    let state = AppState::new(options);
    let load_failed = Arc::new(tokio::sync::Notify::new());
    {
        let state = state.clone();
        let load_failed = load_failed.clone();
        tokio::task::spawn_blocking(move || match Engine::load(config) {
            Ok(engine) => {
                let info = backend::Backend::info(&engine).clone();
                eprintln!(
                    "model loaded: {} ({}), {} slots x {} tokens",
                    info.id,
                    info.modalities().join(", "),
                    info.n_slots,
                    info.n_ctx
                );
                state.set_backend(Arc::new(engine));
            }
            Err(e) => {
                state.set_load_error(format!("{e:#}"));
                load_failed.notify_one();
            }
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async {
            let _ = stop_rx.await;
        })
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        joined = &mut server => {
            return match joined {
                Ok(result) => result.context("the server stopped"),
                Err(e) => Err(anyhow::anyhow!("the server task failed: {e}")),
            };
        }
        _ = shutdown_signal() => eprintln!("shutting down"),
        _ = load_failed.notified() => {}
    }
    let _ = stop_tx.send(());
    if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
        server.abort();
    }
    match state.load_error() {
        Some(e) => Err(anyhow::anyhow!("{e}")),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
