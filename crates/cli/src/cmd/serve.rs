//! `mtmd serve`: flags -> [`server::Config`], then [`server::run`].

use anyhow::{Result, bail};
use clap::Args as ClapArgs;

use super::model_args::ModelArgs;
use super::runtime_args::RuntimeArgs;

#[derive(ClapArgs)]
#[command(mut_arg("mmproj", |a| a
    .help("Multimodal projector GGUF (vision encoder); enables image input")))]
#[command(mut_arg("no_mmproj", |a| a
    .help("Do not load an mmproj, not even the one `-hf` finds")))]
#[command(mut_arg("ctx_size", |a| a
    .help("Context size of each slot in tokens (0: the model's, at most 4096)")))]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests served at once (slots); later ones wait in a queue. Also spelled `-np`.
    #[arg(long, visible_alias = "np", default_value_t = 4)]
    pub parallel: usize,
    /// KV cells shared by all slots (0: parallel x ctx-size). A slot takes cells as its
    /// request grows, up to ctx-size; idle slots' kept conversations are dropped (least
    /// recently used first) when running requests need the room.
    #[arg(long, value_name = "CELLS", default_value_t = 0)]
    pub kv_pool: usize,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
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
    /// Longest audio clip accepted in a request, in seconds.
    #[arg(long, default_value_t = server::DEFAULT_MAX_AUDIO_SECONDS)]
    pub max_audio_seconds: f64,
    /// Longest a request may take once its body is read (queue wait, prompt and generation),
    /// in seconds; past it the generation stops and the client gets 504 (or a final error
    /// event when streaming). 0: no limit.
    #[arg(long, value_name = "SECONDS", default_value_t = server::DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub timeout: u64,
    /// Seconds a connection may take to send a request's headers, or stay idle between
    /// keep-alive requests, before it is closed. 0: no limit.
    #[arg(long, value_name = "SECONDS", default_value_t = server::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub header_timeout: u64,
    /// Seconds a request's body may take to arrive; slower ones get 408. 0: no limit.
    #[arg(long, value_name = "SECONDS", default_value_t = server::DEFAULT_BODY_TIMEOUT.as_secs())]
    pub body_timeout: u64,
    /// Open connections at most; more wait to be accepted until one closes.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Requests that may wait for a slot; more are answered 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_QUEUE)]
    pub max_queue: usize,
}

/// `secs` as an optional limit (0: none).
fn limit(secs: u64) -> Option<std::time::Duration> {
    (secs > 0).then(|| std::time::Duration::from_secs(secs))
}

pub fn run(args: Args) -> Result<()> {
    if args.parallel == 0 {
        bail!("--parallel must be at least 1");
    }
    if args.max_body_mb == 0 {
        bail!("--max-body-mb must be at least 1");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    args.runtime.compute.apply()?;
    let resolved = args.model.resolve_or_default(true)?;
    let config = server::Config {
        host: args.host,
        port: args.port,
        engine: server::EngineConfig {
            model_path: resolved.model,
            mmproj_path: resolved.mmproj,
            alias: args.alias,
            n_ctx: args.runtime.ctx_size,
            n_slots: args.parallel,
            kv_pool_cells: args.kv_pool,
            kv_type: args.runtime.kv_type(),
            media_cache_bytes: args.media_cache_mb.saturating_mul(1 << 20),
            n_threads: args.runtime.threads(),
            image_min_tokens: args.image_min_tokens,
            image_max_tokens: args.image_max_tokens,
            device: args.runtime.compute.device()?,
            n_gpu_layers: args.runtime.compute.gpu_layers,
            encoder_device: args.runtime.compute.encoder_device()?,
        },
        http: server::ServerOptions {
            api_key: args
                .api_key
                .or_else(|| std::env::var("MTMD_API_KEY").ok())
                .filter(|k| !k.is_empty()),
            max_body_bytes: args.max_body_mb.saturating_mul(1 << 20),
            allow_remote_media: args.allow_remote_media,
            max_audio_seconds: args.max_audio_seconds,
            log_requests: true,
            header_timeout: limit(args.header_timeout),
            body_timeout: limit(args.body_timeout),
            request_timeout: limit(args.timeout),
            max_connections: args.max_connections,
            max_queue: args.max_queue,
        },
    };
    Ok(server::run(config)?)
}
