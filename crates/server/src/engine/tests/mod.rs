//! Engine tests on the tiny random-weight vision fixtures (and the real text models when
//! fetched): streaming order, concurrent == sequential greedy output, prefix and media
//! reuse, cancellation, errors and gauges.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use llm::chat::{ChatMessage, ContentPart, MessageContent};
use llm::sampling::SamplingParams;
use mtmd::Bitmap;
use tokio::sync::mpsc::UnboundedReceiver;

mod audio;
mod faults;
mod kv_pool;
mod lifecycle;
mod real;
mod vision;

use super::*;
use crate::backend::{EngineError, FinishReason, MediaItem, Prompt, Usage};

fn fixture(arch: &str, file: &str) -> PathBuf {
    testkit::fixture(arch).join(file)
}

fn config(arch: &str, n_slots: usize, n_ctx: usize, vision: bool) -> EngineConfig {
    EngineConfig {
        model_path: fixture(arch, "model.gguf"),
        mmproj_path: vision.then(|| fixture(arch, "mmproj.gguf")),
        alias: None,
        n_ctx,
        n_slots,
        kv_pool_cells: 0,
        kv_type: KvType::F16,
        media_cache_bytes: 64 << 20,
        n_threads: None,
        image_min_tokens: None,
        image_max_tokens: None,
        device: llm::Device::Cpu,
        n_gpu_layers: None,
        encoder_device: llm::Device::Cpu,
    }
}

fn greedy() -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        seed: Some(1),
        ..SamplingParams::default()
    }
}

fn text_request(text: &str, max_tokens: usize) -> Request {
    Request {
        prompt: Prompt::Text(text.into()),
        sampling: greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
    }
}

fn chat_request(messages: Vec<ChatMessage>, images: Vec<Bitmap>, max_tokens: usize) -> Request {
    let media = images.into_iter().map(MediaItem::Image).collect();
    media_request(messages, media, max_tokens)
}

fn media_request(messages: Vec<ChatMessage>, media: Vec<MediaItem>, max_tokens: usize) -> Request {
    Request {
        prompt: Prompt::Chat { messages, media },
        sampling: greedy(),
        max_tokens: Some(max_tokens),
        stop: Vec::new(),
    }
}

fn user_with_image(text: &str) -> ChatMessage {
    ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![ContentPart::image(), ContentPart::text(text)]),
    )
}

fn image(arch: &str, file: &str) -> Bitmap {
    Bitmap::from_file(fixture(arch, file)).expect("fixture image")
}

/// What one request produced.
#[derive(Debug, Default)]
struct Outcome {
    started: Option<usize>,
    text: String,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    error: Option<EngineError>,
}

/// Longest silence allowed between two events of a request (or before its channel closes):
/// an engine that stalls fails the test instead of hanging CI.
const EVENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The next event of `rx`, `None` once the channel is closed; panics after [`EVENT_TIMEOUT`]
/// without either.
fn next_event(rx: &mut UnboundedReceiver<Event>) -> Option<Event> {
    thread_local! {
        static TIMER: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a timer runtime");
    }
    TIMER
        .with(|rt| rt.block_on(async { tokio::time::timeout(EVENT_TIMEOUT, rx.recv()).await }))
        .unwrap_or_else(|_| panic!("no engine event for {EVENT_TIMEOUT:?}: the engine is stuck"))
}

fn collect(mut rx: UnboundedReceiver<Event>) -> Outcome {
    let mut out = Outcome::default();
    while let Some(event) = next_event(&mut rx) {
        match event {
            Event::Started { prompt_tokens } => {
                assert!(out.started.is_none(), "Started twice");
                out.started = Some(prompt_tokens);
            }
            Event::Text(t) => {
                assert!(out.started.is_some(), "Text before Started");
                out.text.push_str(&t);
            }
            Event::Done { usage, finish, .. } => {
                out.usage = Some(usage);
                out.finish = Some(finish);
            }
            Event::Error(e) => out.error = Some(e),
        }
    }
    out
}

fn run_one(engine: &Engine, request: Request) -> Outcome {
    collect(engine.submit(request))
}

fn wait_for(engine: &Engine, what: &str, ok: impl Fn(&EngineMetrics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = engine.metrics();
        if ok(&m) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A prompt for which greedy decoding of the tiny gemma3 does not stop by itself early.
const LONG_PROMPT: &str = "The quick brown fox";

fn texts(outcomes: &[Outcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| {
            assert!(o.error.is_none(), "{:?}", o.error);
            assert!(o.usage.is_some(), "no Done");
            o.text.clone()
        })
        .collect()
}
