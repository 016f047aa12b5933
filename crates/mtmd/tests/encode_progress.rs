//! The context's encode-progress hook and FLOP estimate, on the Qwen2.5-VL fixture.

use std::sync::{Arc, Mutex};

use llm::{KvType, Model};
use mtmd::{Bitmap, Context, ContextParams};
use testkit::fixture;

#[test]
fn eval_chunks_reports_each_layer_of_each_media_chunk() {
    let dir = fixture("qwen25vl");
    let model = Arc::new(Model::load(dir.join("model.gguf")).expect("model"));
    let mut ctx = Context::new(
        dir.join("mmproj.gguf"),
        model.clone(),
        ContextParams::default(),
    )
    .unwrap();
    let image = Bitmap::from_file(dir.join("photo.png")).expect("image");
    let chunks = ctx
        .tokenize("look: <__media__> and <__media__>.", &[&image, &image])
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let sink = calls.clone();
    ctx.set_encode_progress(Some(Arc::new(move |chunk, done, total| {
        sink.lock().unwrap().push((chunk.media_index, done, total))
    })));
    let mut session = model.new_session(0, KvType::F16).unwrap();
    ctx.eval_chunks(&mut session, &chunks, true).unwrap();
    let want: Vec<_> = (0..2)
        .flat_map(|m| (1..=4).map(move |l| (m, l, 4)))
        .collect();
    assert_eq!(*calls.lock().unwrap(), want);

    // Without the hook nothing more is reported; the estimate counts something.
    ctx.set_encode_progress(None);
    let media = chunks.iter().find_map(|c| c.as_media()).unwrap();
    ctx.encode(media).unwrap();
    assert_eq!(calls.lock().unwrap().len(), 8);
    let flops = ctx.encode_flops(media).unwrap();
    assert!(flops > 2 * media.n_tokens() as u64 * 4 * 64 * 64, "{flops}");
}
