//! Slow and greedy clients against a real `serve_on` over loopback (with a fake engine):
//! trickled headers and bodies are cut off by their timeouts and hold no slot, idle
//! keep-alive connections are closed, and connections beyond `max_connections` wait until
//! one closes. Every test is bounded in time and stops its server.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Running, exchange, get, parse, post, read_reply};
use server::backend::FinishReason;
use server::{AppState, Backend, EngineMetrics, Event, ModelInfo, Request, ServerOptions, Usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Answers every request at once with "ok"; counts what it was given.
struct Quick {
    info: ModelInfo,
    submitted: AtomicUsize,
}

impl Backend for Quick {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn submit(&self, _request: Request) -> mpsc::UnboundedReceiver<Event> {
        self.submitted.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = mpsc::unbounded_channel();
        for event in [
            Event::Started { prompt_tokens: 2 },
            Event::Text("ok".into()),
            Event::Done {
                usage: Usage {
                    prompt_tokens: 2,
                    cached_tokens: 0,
                    completion_tokens: 1,
                },
                finish: FinishReason::Stop,
                prompt_time: Duration::ZERO,
                generation_time: Duration::ZERO,
            },
        ] {
            let _ = tx.send(event);
        }
        rx
    }

    fn metrics(&self) -> EngineMetrics {
        EngineMetrics::default()
    }
}

fn quick() -> Arc<Quick> {
    Arc::new(Quick {
        info: ModelInfo {
            id: "quick".into(),
            created: 0,
            n_ctx: 256,
            n_ctx_train: 256,
            n_slots: 1,
            kv_pool_cells: 0,
            n_vocab: 10,
            n_params: 1,
            size_bytes: 1,
            device: "cpu".into(),
            vision: false,
            audio: false,
            chat_template: None,
            model_path: "quick.gguf".into(),
            mmproj_path: None,
        },
        submitted: AtomicUsize::new(0),
    })
}

async fn start(options: ServerOptions) -> (Running, Arc<Quick>) {
    let backend = quick();
    let state = AppState::new(options);
    state.set_backend(backend.clone());
    (Running::start(state).await, backend)
}

const CHAT: &str = r#"{"messages":[{"role":"user","content":"hi"}]}"#;

/// The whole test, or a panic: nothing here may hang CI.
async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .expect("the test took more than 30 s")
}

/// Writes `bytes` one per `gap` until the server closes the connection; returns when it did.
async fn trickle(stream: TcpStream, bytes: &[u8], gap: Duration) -> Instant {
    let (mut read, mut write) = stream.into_split();
    let closed = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = read.read_to_end(&mut sink).await;
        (Instant::now(), sink)
    });
    for &b in bytes {
        if closed.is_finished() || write.write_all(&[b]).await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    closed.await.expect("reader").0
}

#[tokio::test]
async fn trickled_headers_and_idle_connections_are_closed_and_block_nobody() {
    bounded(async {
        let limit = Duration::from_millis(800);
        let options = ServerOptions {
            header_timeout: Some(limit),
            ..ServerOptions::default()
        };
        let (server, backend) = start(options).await;
        // One byte every 100 ms of a header that would take 6 s.
        let slow = TcpStream::connect(server.addr).await.expect("connect");
        let opened = Instant::now();
        let header = format!(
            "GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(40)
        );
        let slow = tokio::spawn(async move {
            trickle(slow, header.as_bytes(), Duration::from_millis(100)).await
        });
        // An idle connection that never says anything.
        let idle = TcpStream::connect(server.addr).await.expect("connect");
        let idle = tokio::spawn(async move { trickle(idle, b"", Duration::ZERO).await });
        // Meanwhile everyone else is served.
        let reply = exchange(server.addr, &post("/v1/chat/completions", CHAT)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        for (what, task) in [("trickled", slow), ("idle", idle)] {
            let closed = task.await.expect("task").duration_since(opened);
            println!("{what} connection closed after {closed:?} (limit {limit:?})");
            assert!(closed >= limit && closed < limit * 4, "{what}: {closed:?}");
        }
        assert_eq!(backend.submitted.load(Ordering::SeqCst), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_trickled_body_gets_408_and_never_reaches_the_engine() {
    bounded(async {
        let limit = Duration::from_millis(800);
        let options = ServerOptions {
            body_timeout: Some(limit),
            ..ServerOptions::default()
        };
        let (server, backend) = start(options).await;
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            CHAT.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        let started = Instant::now();
        let (mut read, mut write) = stream.into_split();
        let reply = tokio::spawn(async move {
            let mut raw = Vec::new();
            let _ = read.read_to_end(&mut raw).await;
            (Instant::now(), raw)
        });
        // One byte a second, as a slow-loris client would.
        for &b in CHAT.as_bytes() {
            if reply.is_finished() || write.write_all(&[b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let (at, raw) = reply.await.expect("reader");
        let took = at.duration_since(started);
        let reply = parse(&raw);
        assert_eq!(reply.status, 408, "{}", reply.body);
        assert_eq!(reply.json()["error"]["code"], "request_timeout");
        println!("trickled body answered 408 after {took:?} (limit {limit:?})");
        assert!(took >= limit && took < limit * 4, "{took:?}");
        assert_eq!(
            backend.submitted.load(Ordering::SeqCst),
            0,
            "no slot was taken"
        );
        let reply = exchange(server.addr, &post("/v1/chat/completions", CHAT)).await;
        assert_eq!(reply.status, 200);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    bounded(async {
        let options = ServerOptions {
            max_connections: 2,
            header_timeout: Some(Duration::from_secs(20)),
            ..ServerOptions::default()
        };
        let (server, _) = start(options).await;
        // Two keep-alive connections, each served once and then left open.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = TcpStream::connect(server.addr).await.expect("connect");
            s.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
                .await
                .expect("write");
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.expect("read");
            assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
            held.push(s);
        }
        // The third is not served while both are open...
        let mut third = TcpStream::connect(server.addr).await.expect("connect");
        third.write_all(&get("/health")).await.expect("write");
        let mut probe = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(500), third.peek(&mut probe)).await;
        assert!(
            early.is_err(),
            "a third connection was served beyond the cap"
        );
        // ...and is as soon as one closes.
        let freed = Instant::now();
        drop(held.pop());
        let reply = read_reply(&mut third).await;
        assert_eq!(reply.status, 200);
        println!(
            "third connection served {:?} after one closed",
            freed.elapsed()
        );
        assert!(freed.elapsed() < Duration::from_secs(5));
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_claimed_terabyte_allocates_nothing_and_times_out() {
    bounded(async {
        let limit = Duration::from_millis(800);
        let options = ServerOptions {
            body_timeout: Some(limit),
            ..ServerOptions::default()
        };
        let (server, backend) = start(options).await;
        let before = common::rss_bytes();
        let head = "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n\
                    Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n{}";
        let reply = exchange(server.addr, head.as_bytes()).await;
        assert_eq!(reply.status, 408, "{}", reply.body);
        let grown = common::rss_bytes().saturating_sub(before);
        assert!(grown < 16 << 20, "RSS grew by {grown} bytes");
        assert_eq!(backend.submitted.load(Ordering::SeqCst), 0);
        server.stop().await;
    })
    .await;
}
