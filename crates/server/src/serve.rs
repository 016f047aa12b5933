//! [`run`] / [`serve`]: bind, load the engine in the background (clients see 503 "Loading
//! model" meanwhile), serve [`router`] until Ctrl-C / SIGTERM, drain open streams.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Backend;
use crate::config::{Config, ConfigError};
use crate::connections::{ConnLimits, serve_connections};
use crate::engine::{Engine, EngineConfig, LoadError};
use crate::routes::{AppState, router};

/// Why [`run`] / [`serve`] stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no local address")]
    LocalAddr(#[source] std::io::Error),
    #[error("the server stopped")]
    Stopped(#[source] std::io::Error),
    #[error("the server task failed: {0}")]
    Task(String),
    /// The model did not load (the server answered 500 meanwhile, then stopped).
    #[error("{0}")]
    Load(String),
}

/// Validates `config`, starts a tokio runtime and [`serve`]s on it. Blocking.
pub fn run(config: Config) -> Result<(), ServeError> {
    config.validate()?;
    // The HTTP side is light (the engine has its own threads): two workers are plenty.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(config));
    // A model still loading (Ctrl-C during load) must not hold the exit.
    runtime.shutdown_background();
    result
}

/// How long open streams may take to finish after Ctrl-C / SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

/// Binds `config.host:config.port` (printing `listening on http://ADDR` on stderr), loads
/// the engine on a blocking thread and serves until Ctrl-C / SIGTERM or a failed load.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let Config {
        host,
        port,
        engine,
        http,
    } = config;
    // Bind before loading: clients see 503 "Loading model" instead of connection refused.
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|source| ServeError::Bind {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::LocalAddr)?;
    eprintln!("listening on http://{addr}");

    let state = AppState::new(http);
    let load_failed = Arc::new(tokio::sync::Notify::new());
    {
        let state = state.clone();
        let load_failed = load_failed.clone();
        tokio::task::spawn_blocking(move || match load_with_spinner(engine) {
            Ok(engine) => {
                let info = engine.info().clone();
                eprintln!(
                    "model loaded: {} ({}), {} slots x {} tokens, KV pool of {} cells",
                    info.id,
                    info.modalities().join(", "),
                    info.n_slots,
                    info.n_ctx,
                    info.kv_pool_cells
                );
                state.set_backend(Arc::new(engine));
            }
            Err(e) => {
                state.set_load_error(with_sources(&e));
                load_failed.notify_one();
            }
        });
    }

    let stop = async move {
        tokio::select! {
            _ = shutdown_signal() => eprintln!("shutting down"),
            _ = load_failed.notified() => {}
        }
    };
    serve_on(listener, state.clone(), stop).await;
    match state.load_error() {
        Some(e) => Err(ServeError::Load(e.to_owned())),
        None => Ok(()),
    }
}

/// Serves [`router`]`(state)` on `listener` until `shutdown` completes, with the connection
/// limits of `state`'s [`ServerOptions`](crate::ServerOptions) (header timeout, connection
/// cap); requests still open then get 5 s to finish. For embedding the server on a listener
/// of one's own (tests bind port 0 and read its address first).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let options = state.options();
    let limits = ConnLimits {
        header_timeout: options.header_timeout,
        max_connections: options.max_connections,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stop_rx.await;
    };
    let mut server = tokio::spawn(serve_connections(listener, router(state), limits, stopped));
    tokio::select! {
        _ = &mut server => return,
        _ = shutdown => {}
    }
    let _ = stop_tx.send(());
    if tokio::time::timeout(DRAIN, &mut server).await.is_err() {
        server.abort();
    }
}

/// `error: its source: ...` on one line.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// [`Engine::load`], with a spinner on stderr when it is a terminal.
fn load_with_spinner(config: EngineConfig) -> Result<Engine, LoadError> {
    let spinner = std::io::stderr().is_terminal().then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("loading {}", config.model_path.display()));
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let engine = Engine::load(config);
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    engine
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
