//! `mtmd run -hf USER/REPO[:QUANT]` against a fake repository server on 127.0.0.1: file
//! choice, download into MTMD_CACHE_DIR, cache reuse, resume with Range after a cut
//! download, offline fallback, and the one-line errors.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

const REPO: &str = "test/tiny-gemma3";
const Q4: &str = "tiny-gemma3-Q4_K_M.gguf";
const Q8: &str = "tiny-gemma3-Q8_0.gguf";
const MMPROJ: &str = "mmproj-tiny-gemma3-f16.gguf";

fn fixture(name: &str) -> Vec<u8> {
    fixture_of("gemma3", name)
}

fn fixture_of(arch: &str, name: &str) -> Vec<u8> {
    let path = testkit::fixture(arch).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

/// A minimal repository server: one request per connection (`Connection: close`).
struct FakeHub {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// (file, bytes): the next download of `file` stops after `bytes` body bytes.
    cut: Arc<Mutex<Option<(String, usize)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeHub {
    fn start() -> Self {
        let mut files: HashMap<String, Vec<u8>> = HashMap::new();
        let model = fixture("model.gguf");
        files.insert(Q4.into(), model.clone());
        // Same bytes (so that it runs) under the other quant's name.
        files.insert(Q8.into(), model);
        files.insert(MMPROJ.into(), fixture("mmproj.gguf"));
        Self::serving(REPO, files)
    }

    /// A server holding `files` as the repository `repo`.
    fn serving(repo: &str, files: HashMap<String, Vec<u8>>) -> Self {
        let files = Arc::new(files);
        let repo = Arc::new(repo.to_string());

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, cut2, stop2) = (seen.clone(), cut.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (files, seen, cut) = (files.clone(), seen2.clone(), cut2.clone());
                let repo = repo.clone();
                thread::spawn(move || {
                    let _ = serve(conn, &repo, &files, &seen, &cut);
                });
            }
        });
        Self {
            port,
            seen,
            cut,
            stop,
            thread: Some(thread),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn downloads(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path.contains("/resolve/"))
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// Closes the listening socket: later connections are refused.
    fn shut_down(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn serve(
    conn: TcpStream,
    repo: &str,
    files: &HashMap<String, Vec<u8>>,
    seen: &Mutex<Vec<Seen>>,
    cut: &Mutex<Option<(String, usize)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    let mut auth = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
        if let Some((name, value)) = h.split_once(':')
            && name.trim().eq_ignore_ascii_case("authorization")
        {
            auth = Some(value.trim().to_string());
        }
    }
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
        auth: auth.clone(),
    });
    let mut out = conn;
    // A gated repository: the right token gets an empty listing, others 401.
    if path.starts_with("/api/models/test/gated/") {
        return if auth.as_deref() == Some("Bearer sesame") {
            respond(&mut out, "200 OK", &[], b"[]", 2)
        } else {
            respond(&mut out, "401 Unauthorized", &[], b"{}", 2)
        };
    }
    let listing_path = format!("/api/models/{repo}/tree/main?recursive=true");
    if path == listing_path {
        let mut names: Vec<&String> = files.keys().collect();
        names.sort();
        let entries: Vec<String> = names
            .iter()
            .map(|n| {
                format!(
                    r#"{{"type":"file","path":"{n}","size":{},"lfs":{{"size":{},"oid":"x"}}}}"#,
                    files[*n].len(),
                    files[*n].len()
                )
            })
            .chain([r#"{"type":"file","path":"README.md","size":5}"#.to_string()])
            .collect();
        let body = format!("[{}]", entries.join(","));
        return respond(&mut out, "200 OK", &[], body.as_bytes(), body.len());
    }
    let prefix = format!("/{repo}/resolve/main/");
    let Some(data) = path.strip_prefix(&prefix).and_then(|name| files.get(name)) else {
        return respond(&mut out, "404 Not Found", &[], b"not found", 9);
    };
    let name = path.trim_start_matches(&prefix).to_string();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    let (status, body, extra) = match start {
        Some(s) if s < data.len() => (
            "206 Partial Content",
            &data[s..],
            vec![format!(
                "Content-Range: bytes {s}-{}/{}",
                data.len() - 1,
                data.len()
            )],
        ),
        Some(_) => ("416 Range Not Satisfiable", &data[..0], vec![]),
        None => ("200 OK", &data[..], vec![]),
    };
    let limit = {
        let mut cut = cut.lock().unwrap();
        match cut.take() {
            Some((file, n)) if file == name => Some(n),
            other => {
                *cut = other;
                None
            }
        }
    };
    match limit {
        Some(n) => respond(
            &mut out,
            status,
            &extra,
            &body[..n.min(body.len())],
            body.len(),
        ),
        None => respond(&mut out, status, &extra, body, body.len()),
    }
}

/// Sends `body` under a Content-Length of `length` (larger than the body: a cut response).
fn respond(
    out: &mut TcpStream,
    status: &str,
    extra: &[String],
    body: &[u8],
    length: usize,
) -> std::io::Result<()> {
    let mut head =
        format!("HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mtmd-hf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mtmd(endpoint: &str, cache: &Path, args: &[&str]) -> Output {
    mtmd_with_token(endpoint, cache, args, None)
}

fn mtmd_with_token(endpoint: &str, cache: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtmd"));
    cmd.args(args)
        .env("MTMD_HF_ENDPOINT", endpoint)
        .env("MTMD_CACHE_DIR", cache)
        .env_remove("HF_ENDPOINT")
        .env_remove("HF_TOKEN");
    if let Some(token) = token {
        cmd.env("HF_TOKEN", token);
    }
    cmd.output().expect("mtmd runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cached(cache: &Path, name: &str) -> PathBuf {
    cache.join("hf").join("test").join("tiny-gemma3").join(name)
}

const RUN: [&str; 8] = ["run", "-hf", REPO, "-p", "hi", "-n", "4", "--temp"];

fn run_args(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = RUN.to_vec();
    args.push("0");
    args.extend_from_slice(extra);
    args
}

#[test]
fn downloads_once_then_reuses_the_cache_and_works_offline() {
    let mut hub = FakeHub::start();
    let cache = TempDir::new("reuse");
    let out = mtmd(&hub.endpoint(), &cache.0, &run_args(&[]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!out.stdout.is_empty(), "generated text");
    assert_eq!(
        std::fs::read(cached(&cache.0, Q4)).unwrap(),
        fixture("model.gguf")
    );
    assert_eq!(
        std::fs::read(cached(&cache.0, MMPROJ)).unwrap(),
        fixture("mmproj.gguf")
    );
    let paths: Vec<String> = hub.downloads().into_iter().map(|s| s.path).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(!cached(&cache.0, Q8).exists());

    hub.clear();
    let again = mtmd(&hub.endpoint(), &cache.0, &run_args(&[]));
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(hub.downloads().is_empty(), "{:?}", hub.downloads());
    assert_eq!(again.stdout, out.stdout, "greedy output is the same");

    hub.shut_down();
    let offline = mtmd(&hub.endpoint(), &cache.0, &run_args(&[]));
    assert!(offline.status.success(), "{}", stderr(&offline));
    assert!(
        stderr(&offline).contains("offline: using cached"),
        "{}",
        stderr(&offline)
    );
    assert_eq!(offline.stdout, out.stdout);
}

#[test]
fn quant_tag_picks_the_file_and_no_mmproj_skips_the_projector() {
    let hub = FakeHub::start();
    let cache = TempDir::new("quant");
    let mut args = vec!["run", "-hf", "test/tiny-gemma3:q8_0", "-p", "hi", "-n", "2"];
    args.push("--no-mmproj");
    let out = mtmd(&hub.endpoint(), &cache.0, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let paths: Vec<String> = hub.downloads().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, [format!("/{REPO}/resolve/main/{Q8}")]);
    assert!(cached(&cache.0, Q8).exists());
    assert!(!cached(&cache.0, MMPROJ).exists());
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    let hub = FakeHub::start();
    let cache = TempDir::new("resume");
    *hub.cut.lock().unwrap() = Some((Q4.to_string(), 100_000));
    let out = mtmd(&hub.endpoint(), &cache.0, &run_args(&["--no-mmproj"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("run again to resume"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    let part = cached(&cache.0, &format!("{Q4}.part"));
    let have = std::fs::metadata(&part).expect(".part kept").len();
    assert!(have > 0 && have <= 100_000, "{have}");
    assert!(!cached(&cache.0, Q4).exists());

    hub.clear();
    let out = mtmd(&hub.endpoint(), &cache.0, &run_args(&["--no-mmproj"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let downloads = hub.downloads();
    assert_eq!(downloads.len(), 1, "{downloads:?}");
    assert_eq!(
        downloads[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert_eq!(
        std::fs::read(cached(&cache.0, Q4)).unwrap(),
        fixture("model.gguf")
    );
    assert!(!part.exists());
}

#[test]
fn unknown_repo_and_unknown_quant_are_one_line_errors() {
    let hub = FakeHub::start();
    let cache = TempDir::new("errors");
    let out = mtmd(
        &hub.endpoint(),
        &cache.0,
        &["run", "-hf", "test/nope", "-p", "hi"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error:") && err.contains("test/nope not found"),
        "{err}"
    );

    let out = mtmd(
        &hub.endpoint(),
        &cache.0,
        &["run", "-hf", "test/tiny-gemma3:Q2_K", "-p", "hi"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no Q2_K") && err.contains("available: Q4_K_M, Q8_0"),
        "{err}"
    );
    assert!(hub.downloads().is_empty());
}

#[test]
fn no_server_and_no_cache_is_a_network_error() {
    // A port that was free a moment ago: the connection is refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cache = TempDir::new("nonet");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = mtmd(&endpoint, &cache.0, &["run", "-hf", REPO, "-p", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no cached copy"), "{err}");
}

#[test]
fn gated_repo_needs_hf_token_which_is_sent_as_bearer() {
    let hub = FakeHub::start();
    let cache = TempDir::new("gated");
    let args = ["run", "-hf", "test/gated", "-p", "hi"];
    let out = mtmd(&hub.endpoint(), &cache.0, &args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("HTTP 401") && err.contains("HF_TOKEN"),
        "{err}"
    );

    // With the token the listing is read (and is empty).
    let out = mtmd_with_token(&hub.endpoint(), &cache.0, &args, Some("sesame"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("test/gated has no GGUF model files"), "{err}");
    let seen = hub.seen.lock().unwrap().clone();
    assert_eq!(
        seen.last().and_then(|s| s.auth.as_deref()),
        Some("Bearer sesame")
    );
}

#[test]
fn a_part_file_longer_than_the_file_is_discarded() {
    let hub = FakeHub::start();
    let cache = TempDir::new("oversize");
    let part = cached(&cache.0, &format!("{Q4}.part"));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, vec![7u8; fixture("model.gguf").len() + 10]).unwrap();
    let out = mtmd(&hub.endpoint(), &cache.0, &run_args(&["--no-mmproj"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let downloads = hub.downloads();
    assert_eq!(downloads.len(), 1, "{downloads:?}");
    assert_eq!(downloads[0].range, None, "started over");
    assert_eq!(
        std::fs::read(cached(&cache.0, Q4)).unwrap(),
        fixture("model.gguf")
    );
    assert!(!part.exists());
}

/// The README's first command: neither -m nor -hf, just a picture and a question. The default
/// repository is served locally here with the tiny SmolVLM-architecture fixture under the real
/// file names.
#[test]
fn default_model_runs_the_main_job_with_only_a_picture() {
    let mut files = HashMap::new();
    files.insert(
        "SmolVLM-256M-Instruct-Q8_0.gguf".to_string(),
        fixture_of("idefics3", "model.gguf"),
    );
    files.insert(
        "mmproj-SmolVLM-256M-Instruct-Q8_0.gguf".to_string(),
        fixture_of("idefics3", "mmproj.gguf"),
    );
    let hub = FakeHub::serving("ggml-org/SmolVLM-256M-Instruct-GGUF", files);
    let cache = TempDir::new("default-model");
    let photo = testkit::fixture("idefics3/image_a_333x241.png");
    let photo = photo.to_string_lossy();
    let args = [
        "run",
        "--image",
        &photo,
        "-p",
        "What is in this picture?",
        "-n",
        "4",
        "--temp",
        "0",
    ];
    let out = mtmd(&hub.endpoint(), &cache.0, &args);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("default model ggml-org/SmolVLM-256M-Instruct-GGUF"),
        "{err}"
    );
    assert_eq!(hub.downloads().len(), 2, "model and mmproj downloaded");
    // The second run uses the cache.
    hub.clear();
    let again = mtmd(&hub.endpoint(), &cache.0, &args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(again.stdout, out.stdout);
    assert!(hub.downloads().is_empty());
}
