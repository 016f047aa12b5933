//! The KV pool shared by the slots: more slots than the pool would give each, eviction of
//! idle slots' prefixes, the newest request ending when nothing else can free a cell.

use super::*;
use llm::KV_PAGE;

fn pooled(n_slots: usize, n_ctx: usize, pool: usize) -> EngineConfig {
    EngineConfig {
        kv_pool_cells: pool,
        ..config("gemma3", n_slots, n_ctx, false)
    }
}

#[test]
fn four_slots_share_two_pages_and_answer_as_alone() {
    let prompts = ["Hello", "The cat", "One two three", "Why is the sky"];
    let alone: Vec<String> = {
        let engine = Engine::load(config("gemma3", 1, 512, false)).unwrap();
        let outs: Vec<Outcome> = prompts
            .iter()
            .map(|p| run_one(&engine, text_request(p, 24)))
            .collect();
        texts(&outs)
    };
    let engine = Engine::load(pooled(4, 512, 2 * KV_PAGE)).unwrap();
    assert_eq!(engine.info().kv_pool_cells, 2 * KV_PAGE);
    for round in 0..2 {
        let rxs: Vec<_> = prompts
            .iter()
            .map(|p| engine.submit(text_request(p, 24)))
            .collect();
        let outs: Vec<Outcome> = rxs.into_iter().map(collect).collect();
        assert_eq!(texts(&outs), alone, "round {round}");
        let m = engine.metrics();
        assert!(m.kv_pool_cells_used <= m.kv_pool_cells, "{m:?}");
    }
    // Each request leases a page: never more than two ran in one step.
    let m = engine.metrics();
    assert_eq!(m.kv_pool_cells, 2 * KV_PAGE as u64);
    let steps = &m.step_sequences;
    assert_eq!(steps.bounds[1], 2.0);
    assert_eq!(steps.cumulative[1], steps.count, "{m:?}");
}

#[test]
fn idle_prefixes_make_room_and_the_newest_request_ends_when_nothing_can() {
    // Two pages for two slots, each holding one after a first pair of requests.
    let engine = Engine::load(pooled(2, 2048, 2 * KV_PAGE)).unwrap();
    let first: Vec<_> = ["Hello", "The cat"]
        .iter()
        .map(|p| engine.submit(text_request(p, 8)))
        .collect();
    texts(&first.into_iter().map(collect).collect::<Vec<_>>());
    assert_eq!(engine.metrics().kv_pool_cells_used as usize, 2 * KV_PAGE);
    // A long generation takes the other slot's page once its own is full, then stops at
    // the end of the pool (as "length"); a short request sent meanwhile still finishes.
    let rx_a = engine.submit(text_request(LONG_PROMPT, 3 * KV_PAGE));
    wait_for(&engine, "the long request to run", |m| m.slots_busy == 1);
    let rx_b = engine.submit(text_request("Hello there", 8));
    let (a, b) = (collect(rx_a), collect(rx_b));
    let ua = a.usage.expect("the long request finished");
    assert_eq!(a.finish, Some(FinishReason::Length), "{a:?}");
    assert!(
        ua.prompt_tokens + ua.completion_tokens <= 2 * KV_PAGE + 1,
        "{ua:?}"
    );
    assert!(b.error.is_none() && b.usage.is_some(), "{b:?}");
    let m = engine.metrics();
    assert!(m.kv_evictions >= 1, "{m:?}");
    assert!(m.kv_pool_cells_used as usize <= 2 * KV_PAGE, "{m:?}");
}

#[test]
fn a_prompt_larger_than_the_pool_is_refused() {
    let engine = Engine::load(pooled(2, 4096, KV_PAGE)).unwrap();
    let out = run_one(&engine, text_request(&"word ".repeat(400), 4));
    match out.error {
        Some(EngineError::InvalidRequest(m)) => {
            assert!(m.contains("--kv-pool"), "{m}")
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    let ok = run_one(&engine, text_request("Hello", 4));
    assert!(ok.error.is_none() && ok.usage.is_some(), "{ok:?}");
}
