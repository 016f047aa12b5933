//! A GPU that fails mid-run gives a clear error, never a hang or wrong output: out of memory
//! in the middle of a step fails that step (the session keeps exactly the cells it had, and
//! once memory is back the same step gives the right logits); a lost device fails every
//! later call at once.

use std::sync::Arc;

use llm::{KvType, LlmError, Logits, Model};
use tensor::TensorError;
use tensor::gpu::{GpuContext, GpuFault};
use testkit::fixture;

/// A device of its own: a lost device stays lost.
fn own_device() -> Option<Arc<GpuContext>> {
    match GpuContext::new() {
        Ok(ctx) => Some(Arc::new(ctx)),
        Err(_) => {
            testkit::skip_without_gpu("GPU faults");
            None
        }
    }
}

/// Fixture `arch`'s text model with every layer on `ctx`.
fn on_device(ctx: &Arc<GpuContext>, arch: &str) -> Model {
    let mut model = Model::load(fixture(&format!("{arch}/model.gguf"))).unwrap();
    model.place(&llm::Device::Gpu(ctx.clone()), None).unwrap();
    model
}

const PROMPT: [u32; 6] = [1, 2, 3, 4, 5, 6];

#[test]
fn out_of_memory_mid_step_fails_the_step_and_keeps_the_session() {
    let Some(ctx) = own_device() else { return };
    let model = on_device(&ctx, "gemma3");
    let mut session = model.new_session(64, KvType::F16).unwrap();
    session
        .decode_tokens(&model, &PROMPT[..4], Logits::None)
        .unwrap();

    // Fail a few allocations into the next step: some of its layers have run by then.
    ctx.inject_fault(Some(GpuFault::OutOfMemoryAfter(5)));
    let err = session
        .decode_tokens(&model, &PROMPT[4..], Logits::Last)
        .unwrap_err();
    println!("out of memory: {err}");
    assert!(
        matches!(err, LlmError::Tensor(TensorError::GpuOutOfMemory(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("out of memory"), "{err}");
    assert_eq!(session.n_tokens(), 4, "the failed step left cells behind");

    ctx.inject_fault(None);
    let retried = session
        .decode_tokens(&model, &PROMPT[4..], Logits::Last)
        .unwrap();
    // The same steps on a session that never saw a fault.
    let mut fresh = model.new_session(64, KvType::F16).unwrap();
    fresh
        .decode_tokens(&model, &PROMPT[..4], Logits::None)
        .unwrap();
    let want = fresh
        .decode_tokens(&model, &PROMPT[4..], Logits::Last)
        .unwrap();
    assert_eq!(retried, want, "the step after the fault differs");
}

#[test]
fn a_lost_device_fails_every_later_call_at_once() {
    let Some(ctx) = own_device() else { return };
    let model = on_device(&ctx, "qwen2vl");
    let mut session = model.new_session(64, KvType::F16).unwrap();
    session
        .decode_tokens(&model, &PROMPT[..3], Logits::Last)
        .unwrap();

    ctx.inject_fault(Some(GpuFault::Lost));
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let err = session
            .decode_tokens(&model, &PROMPT[3..], Logits::Last)
            .unwrap_err();
        println!("lost: {err} (after {:?})", started.elapsed());
        assert!(
            matches!(err, LlmError::Tensor(TensorError::GpuLost(_))),
            "{err:?}"
        );
        assert!(err.to_string().contains("device lost"), "{err}");
        assert_eq!(session.n_tokens(), 3);
    }
    // Clearing an out-of-memory fault does not bring a lost device back.
    ctx.inject_fault(None);
    assert!(session.decode_tokens(&model, &[7], Logits::Last).is_err());
}
