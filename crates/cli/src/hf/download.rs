//! HTTP: the repository listing and resumable file downloads with progress on stderr.

use std::fs::{self, File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use thiserror::Error;

use super::repo::{RepoFile, RepoSpec};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Error)]
pub enum HfError {
    #[error("repository {repo} not found at {endpoint} (or it is private: set HF_TOKEN)")]
    NotFound { repo: String, endpoint: String },
    #[error("{url}: access denied (HTTP {status}); gated or private repositories need HF_TOKEN")]
    Auth { url: String, status: u16 },
    #[error("{url}: HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("{url}: {message}")]
    Network { url: String, message: String },
    #[error(
        "download of {path} interrupted at {have} of {size} bytes ({message}); run again to resume"
    )]
    Interrupted {
        path: String,
        have: u64,
        size: u64,
        message: String,
    },
    #[error("{path}: the server sent {got} bytes but the repository lists {size}")]
    SizeMismatch { path: String, got: u64, size: u64 },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl HfError {
    /// Failures where a cached copy is still worth using: no connection, or a server error.
    pub fn is_unreachable(&self) -> bool {
        match self {
            HfError::Network { .. } => true,
            HfError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HfError + '_ {
    move |source| HfError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The repository server: endpoint, token and one HTTP agent.
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
}

impl Client {
    /// `MTMD_HF_ENDPOINT`, else `HF_ENDPOINT` (huggingface_hub's), else huggingface.co;
    /// `HF_TOKEN` as bearer token.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let endpoint = var("MTMD_HF_ENDPOINT")
            .or_else(|| var("HF_ENDPOINT"))
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled body must end in an error (and a resumable .part), not a hang.
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(format!("mtmd-rs/{}", env!("CARGO_PKG_VERSION")))
            // Renamed repositories redirect on the same host and still need the token;
            // the CDN's signed URLs do not, and must not see it.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .build();
        Self {
            agent: config.into(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: var("HF_TOKEN").map(|t| t.trim().to_string()),
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn get(&self, url: &str, range_from: u64) -> Result<ureq::http::Response<ureq::Body>, HfError> {
        let mut req = self.agent.get(url);
        if let Some(token) = &self.token {
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        if range_from > 0 {
            req = req.header("Range", format!("bytes={range_from}-"));
        }
        // Sizes are checked against the listing: the bytes must arrive as stored.
        req = req.header("Accept-Encoding", "identity");
        req.call().map_err(|e| HfError::Network {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    fn status_error(&self, url: &str, spec: &RepoSpec, status: u16) -> HfError {
        match status {
            404 => HfError::NotFound {
                repo: spec.name(),
                endpoint: self.endpoint.clone(),
            },
            401 | 403 => HfError::Auth {
                url: url.to_string(),
                status,
            },
            _ => HfError::Http {
                url: url.to_string(),
                status,
            },
        }
    }

    /// The raw JSON of the repository's recursive file listing on `main`.
    pub fn listing(&self, spec: &RepoSpec) -> Result<String, HfError> {
        let url = format!(
            "{}/api/models/{}/{}/tree/main?recursive=true",
            self.endpoint, spec.user, spec.repo
        );
        let mut resp = self.get(&url, 0)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(self.status_error(&url, spec, status));
        }
        resp.body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| HfError::Network {
                url,
                message: e.to_string(),
            })
    }

    /// Downloads `file` to `dest` through `dest.part`, resuming a partial download, and
    /// renames it into place once its size is right.
    pub fn download(&self, spec: &RepoSpec, file: &RepoFile, dest: &Path) -> Result<(), HfError> {
        let url = format!(
            "{}/{}/{}/resolve/main/{}",
            self.endpoint,
            spec.user,
            spec.repo,
            encode_path(&file.path)
        );
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let part = part_path(dest);
        let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if have > file.size {
            remove(&part)?;
            have = 0;
        }
        if have == file.size && have > 0 {
            return fs::rename(&part, dest).map_err(io_err(dest));
        }
        let resp = self.get(&url, have)?;
        let status = resp.status().as_u16();
        let append = match status {
            206 if have > 0 => true,
            200 => false,
            // The .part no longer fits the file (changed upstream): start over.
            416 if have > 0 => {
                remove(&part)?;
                return self.download(spec, file, dest);
            }
            _ => return Err(self.status_error(&url, spec, status)),
        };
        let start = if append { have } else { 0 };
        let content_length = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(len) = content_length
            && start + len != file.size
        {
            return Err(HfError::SizeMismatch {
                path: file.path.clone(),
                got: start + len,
                size: file.size,
            });
        }
        let mut out = if append {
            OpenOptions::new().append(true).open(&part)
        } else {
            File::create(&part)
        }
        .map_err(io_err(&part))?;

        let mut progress = Progress::new(&file.path, file.size, start);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 << 10];
        let mut written = start;
        let outcome = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    written += n as u64;
                    if written > file.size {
                        break Err(HfError::SizeMismatch {
                            path: file.path.clone(),
                            got: written,
                            size: file.size,
                        });
                    }
                    if let Err(e) = out.write_all(&buf[..n]) {
                        break Err(io_err(&part)(e));
                    }
                    progress.set(written);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    break Err(HfError::Interrupted {
                        path: file.path.clone(),
                        have: written,
                        size: file.size,
                        message: e.to_string(),
                    });
                }
            }
        };
        let flushed = out.sync_all().map_err(io_err(&part));
        drop(out);
        progress.finish();
        match outcome {
            // More bytes than listed: the .part is no prefix of the file, so not resumable.
            Err(e @ HfError::SizeMismatch { .. }) => {
                let _ = fs::remove_file(&part);
                return Err(e);
            }
            Err(e) => return Err(e),
            Ok(()) => flushed?,
        }
        if written < file.size {
            return Err(HfError::Interrupted {
                path: file.path.clone(),
                have: written,
                size: file.size,
                message: "the connection closed early".to_string(),
            });
        }
        fs::rename(&part, dest).map_err(io_err(dest))
    }
}

pub fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

fn remove(path: &Path) -> Result<(), HfError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// Percent-encodes each path segment (file names may hold spaces or `#`), keeping `/`.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A bar when stderr is a terminal; otherwise a plain line every few seconds, for logs.
struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    last_line: Instant,
}

impl Progress {
    fn new(label: &str, total: u64, start: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar.set_position(start);
            bar
        });
        Self {
            bar,
            label: label.to_string(),
            total,
            last_line: Instant::now(),
        }
    }

    fn set(&mut self, done: u64) {
        match &self.bar {
            Some(bar) => bar.set_position(done),
            None if self.last_line.elapsed() >= Duration::from_secs(10) => {
                self.last_line = Instant::now();
                eprintln!("{}: {} of {}", self.label, mib(done), mib(self.total));
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_encoded_per_segment() {
        assert_eq!(encode_path("a/b c#1.gguf"), "a/b%20c%231.gguf");
        assert_eq!(encode_path("m-Q4_K_M.gguf"), "m-Q4_K_M.gguf");
    }

    #[test]
    fn part_file_sits_next_to_the_file() {
        assert_eq!(
            part_path(Path::new("/c/m.gguf")),
            PathBuf::from("/c/m.gguf.part")
        );
    }
}
