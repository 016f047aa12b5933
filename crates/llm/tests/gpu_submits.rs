//! On the GPU a decoded token is recorded into one command buffer and submitted once (when
//! its logits are read back), not once per kernel: on a real GPU each submit costs tens of
//! microseconds, several hundred of them per token would cost more than the math.

use llm::{KvType, Logits, Model};
use testkit::fixture;

#[test]
fn a_decoded_token_is_one_submit() {
    let Ok(device @ llm::Device::Gpu(_)) = llm::Device::gpu() else {
        testkit::skip_without_gpu("submits per token");
        return;
    };
    let llm::Device::Gpu(ctx) = &device else {
        unreachable!()
    };
    for arch in ["gemma3", "qwen2vl"] {
        let mut model = Model::load(fixture(&format!("{arch}/model.gguf"))).unwrap();
        model.place(&device, None).unwrap();
        let mut session = model.new_session(128, KvType::F16).unwrap();
        session
            .decode_tokens(&model, &[1, 2, 3, 4, 5], Logits::Last)
            .unwrap();
        let (d0, s0) = ctx.work_counts();
        let logits = session.decode_tokens(&model, &[6], Logits::Last).unwrap();
        let (d1, s1) = ctx.work_counts();
        assert_eq!(logits.len(), model.tokenizer.n_vocab());
        println!(
            "{arch}: {} dispatches, {} submits per token",
            d1 - d0,
            s1 - s0
        );
        assert_eq!(s1 - s0, 1, "{arch}: submits for one token");
        assert!(d1 - d0 > 10, "{arch}: the token ran on the GPU");

        // A prompt piece without logits is submitted at the end of its step all the same.
        let (_, s0) = ctx.work_counts();
        session
            .decode_tokens(&model, &[7, 8], Logits::None)
            .unwrap();
        let (_, s1) = ctx.work_counts();
        assert_eq!(s1 - s0, 1, "{arch}: submits for a step without logits");
    }
}
