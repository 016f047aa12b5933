//! Image chat on the tiny vision fixtures: event order, concurrent == sequential greedy
//! output, prefix and media-cache reuse.

use super::*;

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

/// A request's images reach the encoder together and go through it in one batched pass,
/// with the answer of the same request whose images were encoded one at a time (cached).
#[test]
fn a_requests_images_are_encoded_in_one_pass() {
    let two_images = || {
        let messages = vec![ChatMessage::with_content(
            "user",
            MessageContent::Parts(vec![
                ContentPart::image(),
                ContentPart::image(),
                ContentPart::text("Compare them."),
            ]),
        )];
        let images = vec![image("gemma3", "photo.png"), image("gemma3", "photo2.jpg")];
        chat_request(messages, images, 8)
    };
    let engine = Engine::load(config("gemma3", 1, 2048, true)).unwrap();
    let batched = run_one(&engine, two_images());
    assert!(batched.error.is_none(), "{:?}", batched.error);
    let m = engine.metrics();
    assert_eq!(m.images_encoded, 2);
    let passes = &m.encode_batch_chunks;
    assert_eq!((passes.count, passes.sum), (1, 2.0), "{passes:?}");

    // One image at a time (each its own request), then both from the media cache.
    let one_by_one = Engine::load(config("gemma3", 1, 2048, true)).unwrap();
    for file in ["photo.png", "photo2.jpg"] {
        let single = chat_request(
            vec![user_with_image("Describe this image.")],
            vec![image("gemma3", file)],
            1,
        );
        assert!(run_one(&one_by_one, single).error.is_none());
    }
    let cached = run_one(&one_by_one, two_images());
    let m = one_by_one.metrics();
    assert_eq!((m.images_encoded, m.encode_batch_chunks.sum), (2, 2.0));
    assert_eq!(cached.text, batched.text);
}

#[test]
fn the_same_image_is_encoded_once_per_request_and_across_requests_arriving_together() {
    let twice = || {
        let messages = vec![ChatMessage::with_content(
            "user",
            MessageContent::Parts(vec![
                ContentPart::image(),
                ContentPart::text("What is this?"),
                ContentPart::image(),
                ContentPart::text("And this one?"),
            ]),
        )];
        let same = image("gemma3", "photo.png");
        chat_request(messages, vec![same.clone(), same], 4)
    };
    let engine = Engine::load(config("gemma3", 2, 2048, true)).unwrap();
    let out = run_one(&engine, twice());
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(engine.metrics().images_encoded, 1);

    // Two requests for one new picture submitted together: one encode serves both.
    let engine = Engine::load(config("gemma3", 2, 2048, true)).unwrap();
    let a = engine.submit(twice());
    let b = engine.submit(twice());
    let (a, b) = (collect(a), collect(b));
    assert_eq!(texts(&[a, b]).len(), 2);
    assert_eq!(engine.metrics().images_encoded, 1);
}
