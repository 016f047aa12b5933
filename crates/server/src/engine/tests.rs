//! Engine tests on the tiny random-weight vision fixtures (and the real text models when
//! fetched): streaming order, concurrent == sequential greedy output, prefix and media
//! reuse, cancellation, errors and gauges.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use llm::chat::{ChatMessage, ContentPart, MessageContent};
use llm::sampling::SamplingParams;
use mtmd::Bitmap;
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;
use crate::backend::{FinishReason, MediaItem, Prompt, Usage};

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
        kv_type: KvType::F16,
        media_cache_bytes: 64 << 20,
        n_threads: None,
        image_min_tokens: None,
        image_max_tokens: None,
        device: llm::Device::Cpu,
        n_gpu_layers: None,
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

#[test]
fn image_chat_streams_started_text_done() {
    let engine = Engine::load(config("gemma3", 1, 1024, true)).unwrap();
    assert!(engine.info().vision);
    assert_eq!(engine.info().id, "model");
    assert_eq!(engine.info().n_ctx, 1024);
    let messages = vec![user_with_image("Describe this image.")];
    let out = run_one(
        &engine,
        chat_request(messages.clone(), vec![image("gemma3", "photo.png")], 8),
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    // The prompt count includes the image's tokens: tokenize it the same way to compare.
    let shared = &engine.shared;
    let text = shared.model.apply_chat(&messages, true).unwrap();
    let img = image("gemma3", "photo.png");
    let chunks = shared
        .media
        .as_ref()
        .unwrap()
        .tokenize(&text, &[&img])
        .unwrap();
    let n_image: usize = chunks
        .iter()
        .map(|c| match c {
            mtmd::Chunk::Image(i) => i.n_tokens(),
            _ => 0,
        })
        .sum();
    assert!(n_image > 0);
    assert_eq!(out.started, Some(chunks.n_tokens()));
    let usage = out.usage.unwrap();
    assert_eq!(usage.prompt_tokens, chunks.n_tokens());
    assert_eq!(usage.cached_tokens, 0);
    assert!(usage.completion_tokens >= 1 && usage.completion_tokens <= 8);
    let m = engine.metrics();
    assert_eq!(m.images_encoded, 1);
    assert_eq!(m.requests_finished, 1);
    assert_eq!(m.prompt_tokens, chunks.n_tokens() as u64);
    assert!(m.media_cache_bytes > 0);
}

/// A mix of requests with shared prefixes, images and follow-ups, so a concurrent run has
/// slots reusing cached prefixes that the one-by-one run does not (or reuses differently).
fn mixed_requests(arch: &str) -> Vec<Request> {
    let photo = image(arch, "photo.png");
    let photo2 = image(arch, "photo2.jpg");
    let system = ChatMessage::system("You are a careful assistant who answers briefly.");
    let mut out = Vec::new();
    for (i, q) in [
        "What is this?",
        "Describe the colors.",
        "Count the objects.",
    ]
    .iter()
    .enumerate()
    {
        out.push(chat_request(
            vec![system.clone(), user_with_image(q)],
            vec![if i == 1 {
                photo2.clone()
            } else {
                photo.clone()
            }],
            12,
        ));
        out.push(chat_request(
            vec![system.clone(), ChatMessage::user(*q)],
            vec![],
            12,
        ));
    }
    // A follow-up of the first conversation (its prefix is the first request's prompt).
    out.push(chat_request(
        vec![
            system.clone(),
            user_with_image("What is this?"),
            ChatMessage::assistant("A picture."),
            ChatMessage::user("Tell me more."),
        ],
        vec![photo.clone()],
        12,
    ));
    out.push(text_request("Once upon a time", 12));
    out.push(text_request("Once upon a time there was", 12));
    out
}

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

/// Greedy text of every request: each alone on a fresh engine, all one by one on one slot,
/// and all at once over `n_slots` slots must agree exactly.
fn concurrent_equals_sequential(arch: &str, n_slots: usize) {
    let requests = mixed_requests(arch);
    let fresh: Vec<Outcome> = requests
        .iter()
        .map(|r| {
            let engine = Engine::load(config(arch, 1, 2048, true)).unwrap();
            run_one(&engine, r.clone())
        })
        .collect();
    let fresh = texts(&fresh);

    let engine = Engine::load(config(arch, 1, 2048, true)).unwrap();
    let one_by_one: Vec<Outcome> = requests
        .iter()
        .map(|r| run_one(&engine, r.clone()))
        .collect();
    let reused: usize = one_by_one
        .iter()
        .filter_map(|o| o.usage.map(|u| u.cached_tokens))
        .sum();
    assert!(reused > 0, "the one-by-one run never reused a prefix");
    assert_eq!(
        texts(&one_by_one),
        fresh,
        "one by one (prefix reuse) vs fresh"
    );

    let engine = Engine::load(config(arch, n_slots, 2048, true)).unwrap();
    // Twice over, so the second round meets slots that hold the first round's prompts.
    let receivers: Vec<_> = requests
        .iter()
        .chain(requests.iter())
        .map(|r| engine.submit(r.clone()))
        .collect();
    let concurrent: Vec<Outcome> = receivers.into_iter().map(collect).collect();
    let concurrent = texts(&concurrent);
    assert_eq!(
        &concurrent[..requests.len()],
        &fresh[..],
        "concurrent vs fresh"
    );
    assert_eq!(
        &concurrent[requests.len()..],
        &fresh[..],
        "second round vs fresh"
    );
    let m = engine.metrics();
    assert!(m.prompt_tokens_evaluated < m.prompt_tokens, "{m:?}");
    assert_eq!(m.slots_busy, 0);
    assert_eq!(m.queue_depth, 0);
}

#[test]
fn concurrent_greedy_equals_sequential_gemma3() {
    concurrent_equals_sequential("gemma3", 3);
}

#[test]
fn concurrent_greedy_equals_sequential_qwen2vl() {
    concurrent_equals_sequential("qwen2vl", 2);
}

#[test]
fn follow_up_reuses_the_cache_and_the_media_cache() {
    let engine = Engine::load(config("qwen2vl", 2, 2048, true)).unwrap();
    let photo = image("qwen2vl", "photo.png");
    let first = vec![user_with_image("What is this?")];
    let a = run_one(&engine, chat_request(first.clone(), vec![photo.clone()], 6));
    assert!(a.error.is_none(), "{:?}", a.error);
    let mut follow = first;
    follow.push(ChatMessage::assistant(a.text.clone()));
    follow.push(ChatMessage::user("And the colors?"));
    let b = run_one(&engine, chat_request(follow, vec![photo.clone()], 6));
    let usage = b.usage.unwrap();
    assert!(usage.cached_tokens > 0, "{usage:?}");
    let m = engine.metrics();
    assert_eq!(
        m.images_encoded, 1,
        "the follow-up must not encode the image again"
    );
    assert_eq!(
        m.media_cache_hits, 0,
        "the KV cache held the image: no lookup"
    );

    // Another conversation with the same picture (a different start, so the image itself
    // is not in the chosen slot's cache): the embeddings come from the media cache.
    let other = vec![
        ChatMessage::system("Be terse."),
        user_with_image("Name one thing in it."),
    ];
    let c = run_one(&engine, chat_request(other, vec![photo], 6));
    assert!(c.error.is_none(), "{:?}", c.error);
    let m = engine.metrics();
    assert_eq!(m.images_encoded, 1);
    assert_eq!(m.media_cache_hits, 1);
}

/// A prompt for which greedy decoding of the tiny gemma3 does not stop by itself early.
const LONG_PROMPT: &str = "The quick brown fox";

#[test]
fn dropping_the_receiver_cancels_running_and_queued_requests() {
    let engine = Engine::load(config("gemma3", 1, 4096, false)).unwrap();
    let max = 3000;
    let mut a = engine.submit(text_request(LONG_PROMPT, max));
    // Wait until A streams, then queue B (dropped while waiting) and C.
    loop {
        match next_event(&mut a) {
            Some(Event::Text(_)) => break,
            Some(Event::Started { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let b = engine.submit(text_request("skipped", 4));
    let c = engine.submit(text_request("Hello", 4));
    wait_for(&engine, "two queued", |m| m.queue_depth == 2);
    drop(b);
    let started = Instant::now();
    drop(a);
    let c = collect(c);
    assert!(c.error.is_none(), "{:?}", c.error);
    let c_tokens = c.usage.unwrap().completion_tokens as u64;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "C waited {:?}",
        started.elapsed()
    );
    wait_for(&engine, "A and C finished", |m| m.requests_finished == 2);
    let m = engine.metrics();
    // A was cut short; B never ran (only A and C are counted).
    assert!(m.generated_tokens - c_tokens < max as u64, "{m:?}");
    assert_eq!(m.queue_depth, 0);
    let b_prompt = engine
        .shared
        .model
        .tokenizer
        .tokenize("skipped", true, true)
        .len() as u64;
    let a_prompt = engine
        .shared
        .model
        .tokenizer
        .tokenize(LONG_PROMPT, true, true)
        .len() as u64;
    let c_prompt = engine
        .shared
        .model
        .tokenizer
        .tokenize("Hello", true, true)
        .len() as u64;
    assert_eq!(
        m.prompt_tokens,
        a_prompt + c_prompt,
        "B must not be counted ({b_prompt})"
    );
}

#[test]
fn too_long_prompt_is_refused_and_the_slot_goes_on() {
    let engine = Engine::load(config("gemma3", 1, 64, false)).unwrap();
    let long = "word ".repeat(200);
    let out = run_one(&engine, text_request(&long, 4));
    match out.error {
        Some(EngineError::InvalidRequest(m)) => {
            assert!(m.contains("the context holds 64 per slot"), "{m}")
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    assert!(out.started.is_none());
    let ok = run_one(&engine, text_request("Hello", 4));
    assert!(ok.error.is_none() && ok.usage.is_some(), "{ok:?}");
    // The generation is capped by the room left when it does not say otherwise.
    let mut unbounded = text_request("Hello there", 4);
    unbounded.max_tokens = None;
    let out = run_one(&engine, unbounded);
    let usage = out.usage.unwrap();
    assert!(
        usage.prompt_tokens + usage.completion_tokens <= 64 + 1,
        "{usage:?}"
    );
}

#[test]
fn images_without_mmproj_are_refused() {
    let engine = Engine::load(config("gemma3", 1, 512, false)).unwrap();
    assert!(!engine.info().vision);
    let out = run_one(
        &engine,
        chat_request(
            vec![user_with_image("Hi")],
            vec![image("gemma3", "tiny.png")],
            4,
        ),
    );
    match out.error {
        Some(EngineError::InvalidRequest(m)) => assert!(m.contains("--mmproj"), "{m}"),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    // Marker count mismatch with a projector: the client's fault too.
    let engine = Engine::load(config("gemma3", 1, 512, true)).unwrap();
    let out = run_one(
        &engine,
        chat_request(vec![user_with_image("Hi")], vec![], 4),
    );
    assert!(
        matches!(out.error, Some(EngineError::InvalidRequest(_))),
        "{out:?}"
    );
}

#[test]
fn gauges_follow_queue_and_slots() {
    let engine = Engine::load(config("gemma3", 2, 4096, false)).unwrap();
    assert_eq!(engine.metrics().slots_busy, 0);
    let long: Vec<_> = (0..2)
        .map(|i| engine.submit(text_request(&format!("{LONG_PROMPT} {i}"), 3000)))
        .collect();
    wait_for(&engine, "both slots busy", |m| m.slots_busy == 2);
    let queued: Vec<_> = (0..3)
        .map(|_| engine.submit(text_request("Hello", 2)))
        .collect();
    wait_for(&engine, "three queued", |m| m.queue_depth == 3);
    drop(long);
    let done: Vec<Outcome> = queued.into_iter().map(collect).collect();
    assert!(done.iter().all(|o| o.usage.is_some()));
    wait_for(&engine, "all idle", |m| {
        m.slots_busy == 0 && m.queue_depth == 0
    });
}

#[test]
fn dropping_the_engine_does_not_hang() {
    let engine = Engine::load(config("gemma3", 2, 512, false)).unwrap();
    let rx = engine.submit(text_request("Hello", 4));
    let queued: Vec<_> = (0..4)
        .map(|_| engine.submit(text_request("Hello", 4)))
        .collect();
    let start = Instant::now();
    drop(engine);
    assert!(start.elapsed() < Duration::from_secs(10));
    // Whatever was running finishes or the channel closes; nothing blocks forever.
    let _ = collect(rx);
    for q in queued {
        let _ = collect(q);
    }
}

use testkit::real_model;

/// Conversations sharing a system prompt, with follow-ups, as a chat UI sends them.
fn real_requests() -> Vec<Request> {
    let system = ChatMessage::system("You are a helpful assistant. Answer in one short paragraph.");
    let questions = [
        "Why is the sky blue?",
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Explain recursion to a child.",
    ];
    let mut out = Vec::new();
    for q in questions {
        out.push(chat_request(
            vec![system.clone(), ChatMessage::user(q)],
            vec![],
            24,
        ));
        out.push(chat_request(
            vec![
                system.clone(),
                ChatMessage::user(q),
                ChatMessage::assistant("Let me think about it."),
                ChatMessage::user("Please go on."),
            ],
            vec![],
            24,
        ));
    }
    out
}

fn real_concurrent_equals_fresh(file: &str, n_slots: usize) {
    let Some(path) = real_model(file) else { return };
    let cfg = |n_slots| EngineConfig {
        model_path: path.clone(),
        mmproj_path: None,
        ..config("gemma3", n_slots, 1024, false)
    };
    let requests = real_requests();
    let fresh: Vec<Outcome> = requests
        .iter()
        .map(|r| run_one(&Engine::load(cfg(1)).unwrap(), r.clone()))
        .collect();
    let fresh = texts(&fresh);
    let engine = Engine::load(cfg(n_slots)).unwrap();
    let receivers: Vec<_> = requests
        .iter()
        .chain(requests.iter())
        .map(|r| engine.submit(r.clone()))
        .collect();
    let outcomes: Vec<Outcome> = receivers.into_iter().map(collect).collect();
    let cached: usize = outcomes
        .iter()
        .filter_map(|o| o.usage.map(|u| u.cached_tokens))
        .sum();
    assert!(cached > 0, "no prefix was reused");
    let concurrent = texts(&outcomes);
    for (i, (c, f)) in concurrent.iter().zip(fresh.iter().cycle()).enumerate() {
        assert_eq!(c, f, "request {i}: concurrent (with prefix reuse) vs fresh");
    }
}

#[test]
fn real_gemma3_concurrent_equals_fresh() {
    real_concurrent_equals_fresh("gemma-3-270m-q4_k_m.gguf", 4);
}

#[test]
fn real_qwen25_concurrent_equals_fresh() {
    real_concurrent_equals_fresh("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 3);
}

#[test]
fn long_greedy_run_of_the_cancel_test_prompt() {
    // The cancellation tests assume this prompt keeps the tiny gemma3 busy for a while.
    let engine = Engine::load(config("gemma3", 1, 4096, false)).unwrap();
    let out = run_one(&engine, text_request(LONG_PROMPT, 300));
    assert_eq!(out.finish, Some(FinishReason::Length), "{out:?}");
}

#[test]
fn real_follow_up_keeps_the_previous_prompt_and_matches_fresh() {
    let Some(path) = real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let cfg = EngineConfig {
        model_path: path,
        mmproj_path: None,
        ..config("gemma3", 1, 1024, false)
    };
    let engine = Engine::load(cfg.clone()).unwrap();
    let mut messages = vec![
        ChatMessage::system("You are a helpful assistant."),
        ChatMessage::user("Name three primary colors."),
    ];
    let first = run_one(&engine, chat_request(messages.clone(), vec![], 20));
    let first_prompt = first.usage.unwrap().prompt_tokens;
    messages.push(ChatMessage::assistant(first.text.clone()));
    messages.push(ChatMessage::user("And three secondary ones?"));
    let second = run_one(&engine, chat_request(messages.clone(), vec![], 20));
    let usage = second.usage.unwrap();
    // The whole first prompt stays; the answer (decoded token by token) is evaluated again.
    assert!(
        usage.cached_tokens >= first_prompt - 1,
        "{usage:?} first {first_prompt}"
    );
    let fresh = run_one(
        &Engine::load(cfg).unwrap(),
        chat_request(messages, vec![], 20),
    );
    assert_eq!(second.text, fresh.text);
}

/// An encoder that gives 4 zero rows per image, fails to preprocess 1-pixel-wide images
/// and panics encoding 2-pixel-wide ones.
struct TrickyEncoder {
    n_embd: usize,
}

impl mtmd::MediaEncoder for TrickyEncoder {
    fn kind(&self) -> mtmd::MediaKind {
        mtmd::MediaKind::Image
    }

    fn framing(&self) -> mtmd::Framing {
        mtmd::Framing::wrap("<start_of_image>", "<end_of_image>")
    }

    fn non_causal(&self) -> bool {
        true
    }

    fn n_embd_out(&self) -> usize {
        self.n_embd
    }

    fn prepare(
        &self,
        media: mtmd::Media<'_>,
    ) -> Result<Vec<mtmd::PreparedMedia>, mtmd::EncoderError> {
        let mtmd::Media::Image(bitmap) = media else {
            return Err("images only".into());
        };
        if bitmap.width == 1 {
            return Err("too narrow".into());
        }
        Ok(vec![mtmd::PreparedMedia {
            place: mtmd::Placement::Whole,
            nx: 4,
            ny: 1,
            n_tokens: 4,
            data: Arc::new(bitmap.width),
        }])
    }

    fn encode(&self, image: &mtmd::PreparedMedia) -> Result<Vec<f32>, mtmd::EncoderError> {
        if image.data.downcast_ref::<u32>() == Some(&2) {
            panic!("encoder exploded");
        }
        Ok(vec![0.0; 4 * self.n_embd])
    }
}

fn tricky_engine() -> Engine {
    let cfg = config("gemma3", 1, 512, false);
    let model = Arc::new(llm::Model::load(&cfg.model_path).unwrap());
    let encoder = TrickyEncoder {
        n_embd: model.hparams().n_embd_inp(),
    };
    let ctx = mtmd::Context::with_encoder(
        model.clone(),
        Box::new(encoder),
        mtmd::ContextParams::default(),
    )
    .unwrap();
    Engine::start(&cfg, model, Some(ctx)).unwrap()
}

fn solid(nx: u32) -> Bitmap {
    Bitmap::from_rgb(nx, 2, vec![128; nx as usize * 6]).unwrap()
}

#[test]
fn a_panic_in_a_request_is_an_internal_error_and_the_slot_survives() {
    let engine = tricky_engine();
    let ok = |engine: &Engine| {
        let out = run_one(
            engine,
            chat_request(vec![user_with_image("Hi")], vec![solid(3)], 3),
        );
        assert!(out.error.is_none() && out.usage.is_some(), "{out:?}");
    };
    ok(&engine);
    let out = run_one(
        &engine,
        chat_request(vec![user_with_image("Hi")], vec![solid(2)], 3),
    );
    match out.error {
        Some(EngineError::Internal(m)) => assert!(m.contains("encoder exploded"), "{m}"),
        other => panic!("expected Internal, got {other:?}"),
    }
    // The slot forgot its cache and serves the next request.
    ok(&engine);
    assert_eq!(engine.metrics().slots_busy, 0);
}

#[test]
fn preprocessing_errors_are_the_clients() {
    let engine = tricky_engine();
    let out = run_one(
        &engine,
        chat_request(vec![user_with_image("Hi")], vec![solid(1)], 3),
    );
    match out.error {
        Some(EngineError::InvalidRequest(m)) => assert!(m.contains("too narrow"), "{m}"),
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn load_errors_name_the_file() {
    let mut cfg = config("gemma3", 1, 512, false);
    cfg.model_path = fixture("gemma3", "missing.gguf");
    let e = Engine::load(cfg).err().unwrap().to_string();
    assert!(e.contains("missing.gguf"), "{e}");
    let mut cfg = config("gemma3", 1, 512, true);
    cfg.mmproj_path = Some(fixture("gemma3", "photo.png"));
    let e = Engine::load(cfg).err().unwrap().to_string();
    assert!(e.contains("photo.png"), "{e}");
    let mut cfg = config("gemma3", 0, 512, false);
    cfg.n_slots = 0;
    assert!(Engine::load(cfg).is_err());
}

#[test]
fn real_long_prompts_and_repeats_match_fresh() {
    for file in [
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let Some(path) = real_model(file) else {
            continue;
        };
        let cfg = EngineConfig {
            model_path: path,
            mmproj_path: None,
            ..config("gemma3", 1, 2048, false)
        };
        let numbers: Vec<String> = (0..130).map(|i| (i * 7 % 1000).to_string()).collect();
        let long = format!("Here is a list of numbers: {}", numbers.join(", "));
        let prompts = [
            long.clone(),
            format!("{long}. Now tell me which of these numbers is the largest one, and why."),
            format!("{long}, 1"),
            long.clone(),
        ];
        let engine = Engine::load(cfg.clone()).unwrap();
        let reused: Vec<Outcome> = prompts
            .iter()
            .map(|p| run_one(&engine, text_request(p, 8)))
            .collect();
        let fresh: Vec<Outcome> = prompts
            .iter()
            .map(|p| run_one(&Engine::load(cfg.clone()).unwrap(), text_request(p, 8)))
            .collect();
        let n_long = reused[0].usage.unwrap().prompt_tokens;
        assert!(n_long > llm::decoder::MAX_UBATCH, "{file}: {n_long} tokens");
        let cached: Vec<usize> = reused
            .iter()
            .map(|o| o.usage.unwrap().cached_tokens)
            .collect();
        assert!(cached[1] >= n_long - 1, "{file}: {cached:?}");
        assert!(cached[3] > 0, "{file}: {cached:?}");
        assert_eq!(texts(&reused), texts(&fresh), "{file}: cached {cached:?}");
    }
}

// Audio, on the tiny random-weight Qwen2-Audio fixture (its mmproj is an audio encoder).

fn audio_config(n_slots: usize) -> EngineConfig {
    EngineConfig {
        // The reference was computed with an f32 KV cache.
        kv_type: KvType::F32,
        ..config("qwen2audio", n_slots, 2048, true)
    }
}

fn clip(file: &str) -> mtmd::Audio {
    mtmd::Audio::from_file(fixture("qwen2audio", file), &mtmd::DecodeOptions::default())
        .expect("fixture audio")
}

/// The fixture's prompt.txt as chat messages: the system turn, then the clip and the question.
fn audio_question(system: &str, question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::system(system),
        ChatMessage::with_content(
            "user",
            MessageContent::Parts(vec![
                ContentPart::input_audio("", ""),
                ContentPart::text(question),
            ]),
        ),
    ]
}

const REF_SYSTEM: &str = "You are a helpful assistant.";
const REF_QUESTION: &str = "What do you hear in this audio clip?";

#[test]
fn audio_chat_equals_the_library_reference() {
    let engine = Engine::load(audio_config(1)).unwrap();
    let info = engine.info();
    assert!(info.audio && !info.vision, "{info:?}");
    assert_eq!(info.modalities(), vec!["text", "audio"]);
    let dir = testkit::fixture("qwen2audio");
    let reference = testkit::reference_json(&dir);
    let messages = audio_question(REF_SYSTEM, REF_QUESTION);
    // The chat template renders exactly the reference prompt.
    let rendered = engine.shared.model.apply_chat(&messages, true).unwrap();
    let prompt = std::fs::read_to_string(dir.join("prompt.txt")).unwrap();
    assert_eq!(rendered, prompt);
    // Cases whose 16 greedy steps all have a clear top-2 margin (>= 5e-2).
    for case in ["wav16k", "flac16k"] {
        let case = &reference["cases"][case];
        let file = case["input_file"].as_str().unwrap();
        let want = case["greedy_text"].as_str().unwrap();
        let n = case["greedy_ids"].as_array().unwrap().len();
        let out = run_one(
            &engine,
            media_request(messages.clone(), vec![MediaItem::Audio(clip(file))], n),
        );
        assert!(out.error.is_none(), "{file}: {:?}", out.error);
        assert_eq!(out.text, want, "{file}");
        let usage = out.usage.unwrap();
        assert_eq!(
            usage.prompt_tokens,
            case["n_prompt_tokens"].as_u64().unwrap() as usize,
            "{file}: audio tokens count in the prompt"
        );
        assert_eq!(usage.completion_tokens, n);
    }
    let m = engine.metrics();
    // WAV and FLAC hold the same samples: one encode, then the KV cache kept it all.
    assert_eq!((m.audio_encoded, m.images_encoded), (1, 0), "{m:?}");
    assert!(m.audio_encode_seconds > 0.0);
}

#[test]
fn audio_embeddings_come_from_the_media_cache() {
    let engine = Engine::load(audio_config(1)).unwrap();
    let speech = || MediaItem::Audio(clip("speech_a_16k_mono.wav"));
    let a = run_one(
        &engine,
        media_request(
            audio_question("Be brief.", "What is it?"),
            vec![speech()],
            6,
        ),
    );
    assert!(a.error.is_none(), "{:?}", a.error);
    // Another start: the slot's KV cache diverges before the clip, the encoder is skipped.
    let b = run_one(
        &engine,
        media_request(
            audio_question("Be terse.", "What is it?"),
            vec![speech()],
            6,
        ),
    );
    assert!(b.error.is_none(), "{:?}", b.error);
    let m = engine.metrics();
    assert_eq!(m.audio_encoded, 1, "{m:?}");
    assert_eq!(m.media_cache_hits, 1, "{m:?}");
    // The cached embeddings give what a fresh engine computes.
    let fresh = Engine::load(audio_config(1)).unwrap();
    let c = run_one(
        &fresh,
        media_request(
            audio_question("Be terse.", "What is it?"),
            vec![speech()],
            6,
        ),
    );
    assert_eq!(b.text, c.text);
    assert_eq!(
        b.usage.unwrap().prompt_tokens,
        c.usage.unwrap().prompt_tokens
    );
}

#[test]
fn transcription_prompt_and_two_clips_in_one_message() {
    let engine = Engine::load(audio_config(2)).unwrap();
    let transcribe = vec![ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::input_audio("", ""),
            ContentPart::text("Transcribe this audio."),
        ]),
    )];
    let one = run_one(
        &engine,
        media_request(
            transcribe,
            vec![MediaItem::Audio(clip("short_0p1s_16k.wav"))],
            4,
        ),
    );
    assert!(one.error.is_none(), "{:?}", one.error);
    let two = vec![ChatMessage::with_content(
        "user",
        MessageContent::Parts(vec![
            ContentPart::input_audio("", ""),
            ContentPart::input_audio("", ""),
            ContentPart::text("Compare them."),
        ]),
    )];
    let out = run_one(
        &engine,
        media_request(
            two,
            vec![
                MediaItem::Audio(clip("short_0p1s_16k.wav")),
                MediaItem::Audio(clip("quiet_a_16k_mono.wav")),
            ],
            4,
        ),
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    // Each clip is one 30 s window of 750 tokens.
    assert!(out.usage.unwrap().prompt_tokens > 1500, "{out:?}");
    assert_eq!(engine.metrics().audio_encoded, 2, "short clip cached");
}

#[test]
fn media_of_the_wrong_kind_is_the_clients_fault() {
    // Audio to a vision mmproj, an image to an audio mmproj, audio without any mmproj.
    let cases = [
        (
            config("gemma3", 1, 1024, true),
            MediaItem::Audio(clip("short_0p1s_16k.wav")),
        ),
        (
            audio_config(1),
            MediaItem::Image(image("gemma3", "tiny.png")),
        ),
        (
            config("gemma3", 1, 1024, false),
            MediaItem::Audio(clip("short_0p1s_16k.wav")),
        ),
    ];
    for (config, item) in cases {
        let engine = Engine::load(config).unwrap();
        let part = if item.is_audio() {
            ContentPart::input_audio("", "")
        } else {
            ContentPart::image()
        };
        let messages = vec![ChatMessage::with_content(
            "user",
            MessageContent::Parts(vec![part, ContentPart::text("Hi")]),
        )];
        let out = run_one(&engine, media_request(messages, vec![item], 4));
        match out.error {
            Some(EngineError::InvalidRequest(m)) => {
                assert!(m.contains("audio") || m.contains("image"), "{m}")
            }
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        // The slot goes on serving.
        let ok = run_one(&engine, text_request("Hello", 2));
        assert!(ok.error.is_none(), "{:?}", ok.error);
    }
}
