//! Continuous batching: several sessions evaluated in one step give each session exactly
//! the logits it gets alone (the kernels are batch-invariant), including a mixed step of
//! prompt pieces and single generated tokens, and an error leaves no cells behind.

mod common;

use common::*;
use llm::{KvType, Logits, Model, Session, StepInput};

fn prompts() -> Vec<Vec<u32>> {
    vec![
        (10..17).collect(),
        (200..213).collect(),
        vec![42],
        (300..340).collect(),
    ]
}

fn alone(model: &Model, prompt: &[u32], next: u32) -> (Vec<f32>, Vec<f32>) {
    let mut s = model.new_session(256, KvType::F16).unwrap();
    let a = s.decode_tokens(model, prompt, Logits::Last).unwrap();
    let b = s.decode_tokens(model, &[next], Logits::Last).unwrap();
    (a, b)
}

fn check(model: &Model, name: &str) {
    let prompts = prompts();
    let next: Vec<u32> = (0..prompts.len() as u32).map(|i| 5 + i).collect();
    let want: Vec<_> = prompts
        .iter()
        .zip(&next)
        .map(|(p, &t)| alone(model, p, t))
        .collect();

    let mut sessions: Vec<Session> = (0..prompts.len())
        .map(|_| model.new_session(256, KvType::F16).unwrap())
        .collect();
    // Step 1: every prompt in one step.
    let mut steps: Vec<(&mut Session, StepInput)> = sessions
        .iter_mut()
        .zip(&prompts)
        .map(|(s, p)| {
            (
                s,
                StepInput::Tokens {
                    tokens: p,
                    logits: Logits::Last,
                },
            )
        })
        .collect();
    let first = model.decode_many(&mut steps).unwrap();
    // Step 2: one generated token each.
    let mut steps: Vec<(&mut Session, StepInput)> = sessions
        .iter_mut()
        .zip(&next)
        .map(|(s, t)| {
            (
                s,
                StepInput::Tokens {
                    tokens: std::slice::from_ref(t),
                    logits: Logits::Last,
                },
            )
        })
        .collect();
    let second = model.decode_many(&mut steps).unwrap();
    for (i, (a, b)) in want.iter().enumerate() {
        let (e1, _) = max_abs_err(&first[i], a);
        let (e2, _) = max_abs_err(&second[i], b);
        println!("{name} seq {i}: max |batched - alone| prompt {e1:.3e}, next token {e2:.3e}");
        assert_eq!(
            &first[i], a,
            "{name} seq {i}: prompt logits differ from alone"
        );
        assert_eq!(
            &second[i], b,
            "{name} seq {i}: next-token logits differ from alone"
        );
    }
    for s in &sessions {
        assert!(s.n_tokens() > 1);
    }

    // A mixed step: a prompt piece for a fresh session beside generated tokens.
    let mut fresh = model.new_session(256, KvType::F16).unwrap();
    let (ref_a, _) = alone(model, &prompts[3], 1);
    let tail = [7u32];
    let mut steps: Vec<(&mut Session, StepInput)> = vec![
        (
            &mut fresh,
            StepInput::Tokens {
                tokens: &prompts[3][..25],
                logits: Logits::None,
            },
        ),
        (
            &mut sessions[0],
            StepInput::Tokens {
                tokens: &tail,
                logits: Logits::Last,
            },
        ),
    ];
    model.decode_many(&mut steps).unwrap();
    let rest = fresh
        .decode_tokens(model, &prompts[3][25..], Logits::Last)
        .unwrap();
    assert_eq!(rest, ref_a, "{name}: a prompt split across steps differs");

    // An error (a token outside the vocabulary) leaves every session as it was.
    let before: Vec<usize> = sessions.iter().map(Session::n_tokens).collect();
    let bad = [u32::MAX];
    let mut steps: Vec<(&mut Session, StepInput)> = sessions
        .iter_mut()
        .enumerate()
        .map(|(i, s)| {
            (
                s,
                StepInput::Tokens {
                    tokens: if i == 2 { &bad[..] } else { &tail[..] },
                    logits: Logits::Last,
                },
            )
        })
        .collect();
    assert!(model.decode_many(&mut steps).is_err());
    let after: Vec<usize> = sessions.iter().map(Session::n_tokens).collect();
    assert_eq!(before, after);
}

#[test]
fn batched_sessions_match_alone_on_real_models() {
    for file in [
        "gemma-3-270m-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    ] {
        let Some(path) = real_model(file) else {
            continue;
        };
        check(&Model::load(path).unwrap(), file);
    }
}

#[test]
fn batched_sessions_match_alone_on_fixtures() {
    // f32 weights, M-RoPE (qwen2vl) and sliding-window / GEGLU (gemma3).
    for arch in ["qwen2vl", "gemma3"] {
        let model = Model::load(fixture(&format!("{arch}/model.gguf"))).unwrap();
        check(&model, arch);
    }
}

#[test]
fn batched_sessions_on_the_gpu_match_alone() {
    let Ok(device @ llm::Device::Gpu(_)) = llm::Device::gpu() else {
        testkit::skip_without_gpu("decode_many on the GPU");
        return;
    };
    // The GPU's matvec (few rows) and tiled matmul round differently: compare within
    // a tight bound instead of bit for bit.
    let mut model = Model::load(fixture("qwen2vl/model.gguf")).unwrap();
    model.place(&device, None).unwrap();
    let prompts = prompts();
    let mut sessions: Vec<Session> = (0..prompts.len())
        .map(|_| model.new_session(256, KvType::F16).unwrap())
        .collect();
    let mut steps: Vec<(&mut Session, StepInput)> = sessions
        .iter_mut()
        .zip(&prompts)
        .map(|(s, p)| {
            let input = StepInput::Tokens {
                tokens: p,
                logits: Logits::Last,
            };
            (s, input)
        })
        .collect();
    let together = model.decode_many(&mut steps).unwrap();
    for (p, got) in prompts.iter().zip(&together) {
        let mut s = model.new_session(256, KvType::F16).unwrap();
        let want = s.decode_tokens(&model, p, Logits::Last).unwrap();
        let (err, scale) = max_abs_err(got, &want);
        println!("gpu: max |batched - alone| {err:.3e} of max |logit| {scale:.3}");
        assert!(err <= 1e-3 * scale.max(1.0), "{err} vs {scale}");
        assert_eq!(argmax(got), argmax(&want));
    }
}
