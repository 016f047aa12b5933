//! Faults: an encoder that panics or refuses, load errors that name the file.

use super::*;

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
