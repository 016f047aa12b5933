//! The real text models (when fetched): concurrent and reused == fresh.

use testkit::real_model;

use super::*;

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

#[test]
fn real_sixteen_concurrent_greedy_answers_equal_alone() {
    let Some(path) = real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let cfg = |n_slots| EngineConfig {
        model_path: path.clone(),
        mmproj_path: None,
        ..config("gemma3", n_slots, 512, false)
    };
    let topics = [
        "rain", "stars", "bread", "rivers", "cats", "trains", "snow", "bees",
    ];
    let requests: Vec<Request> = topics
        .iter()
        .flat_map(|t| {
            [
                chat_request(
                    vec![ChatMessage::user(format!("One line about {t}."))],
                    vec![],
                    12,
                ),
                text_request(&format!("A short story about {t}:"), 12),
            ]
        })
        .collect();
    assert_eq!(requests.len(), 16);
    let alone_engine = Engine::load(cfg(1)).unwrap();
    let alone: Vec<Outcome> = requests
        .iter()
        .map(|r| {
            // A fresh cache for each: nothing reused.
            let out = run_one(&alone_engine, r.clone());
            assert_eq!(out.usage.unwrap().cached_tokens, 0);
            out
        })
        .collect();
    let engine = Engine::load(cfg(8)).unwrap();
    let receivers: Vec<_> = requests.iter().map(|r| engine.submit(r.clone())).collect();
    let together: Vec<Outcome> = receivers.into_iter().map(collect).collect();
    assert_eq!(texts(&together), texts(&alone));
    let m = engine.metrics();
    let mean = m.step_sequences.sum / m.step_sequences.count.max(1) as f64;
    println!(
        "16 requests on 8 slots: {} steps, {mean:.2} sequences per step",
        m.step_sequences.count
    );
    assert!(
        mean > 1.5,
        "requests were not batched: {:?}",
        m.step_sequences
    );
}

#[test]
fn real_four_turn_conversation_evaluates_only_new_tokens() {
    let Some(path) = real_model("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf") else {
        return;
    };
    let cfg = EngineConfig {
        model_path: path,
        mmproj_path: None,
        ..config("gemma3", 2, 2048, false)
    };
    let engine = Engine::load(cfg.clone()).unwrap();
    let mut messages = vec![ChatMessage::system("You are a helpful assistant.")];
    let mut previous: Option<Usage> = None;
    for question in [
        "Name a primary color.",
        "Name another one.",
        "And a third?",
        "Which of them is warmest?",
    ] {
        messages.push(ChatMessage::user(question));
        let out = run_one(&engine, chat_request(messages.clone(), vec![], 12));
        let usage = out.usage.unwrap();
        if let Some(prev) = previous {
            // Everything of the previous turn stays: its prompt and its answer, except
            // the last sampled token, which was never decoded.
            let held = prev.prompt_tokens + prev.completion_tokens - 1;
            println!(
                "turn: prompt {} cached {} (previous turn held {held}), evaluated {}",
                usage.prompt_tokens,
                usage.cached_tokens,
                usage.prompt_tokens - usage.cached_tokens
            );
            assert!(usage.cached_tokens >= held, "{usage:?} after {prev:?}");
        }
        let fresh = run_one(
            &Engine::load(cfg.clone()).unwrap(),
            chat_request(messages.clone(), vec![], 12),
        );
        assert_eq!(out.text, fresh.text, "reused vs fresh");
        messages.push(ChatMessage::assistant(out.text.clone()));
        previous = Some(usage);
    }
}
