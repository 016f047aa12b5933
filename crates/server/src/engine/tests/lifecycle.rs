//! Cancellation, refused prompts, gauges and shutdown.

use super::*;

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
            assert!(
                m.starts_with("the prompt has ") && m.contains("the context holds 64 per slot"),
                "{m}"
            )
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
    // A max_tokens beyond the context is clamped to the room the prompt leaves.
    let mut greedy_long = text_request(LONG_PROMPT, 100_000);
    greedy_long.sampling.temperature = 0.0;
    let out = run_one(&engine, greedy_long);
    let usage = out.usage.unwrap();
    assert!(
        usage.completion_tokens <= 64 - usage.prompt_tokens,
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
