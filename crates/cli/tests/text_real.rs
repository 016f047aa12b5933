//! Issue 3 acceptance through the `mtmd` binary on the two real models: `mtmd tokenize` and
//! its flags against llama.cpp's ids, and greedy `mtmd run --messages` against llama.cpp's
//! continuations (tests/fixtures/real-text).

use std::process::Command;

use serde_json::Value as Json;

const MODELS: [(&str, &str); 2] = [
    ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"),
    (
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
    ),
];

fn fixture(dir: &str, file: &str) -> Json {
    testkit::reference_json_file(&testkit::fixture("real-text").join(dir).join(file))
}

use testkit::real_model;

fn mtmd(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mtmd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn ids(v: &Json) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

#[test]
fn tokenize_command_matches_llama_cpp() {
    for (file, dir) in MODELS {
        let Some(model) = real_model(file) else {
            continue;
        };
        let model = model.to_str().unwrap();
        let cases = fixture(dir, "tokenize.json");
        let cases = cases["cases"].as_array().unwrap();
        for case in cases {
            let text = case["text"].as_str().unwrap();
            for (field, flags) in [
                ("ids", &[][..]),
                ("ids_parse_special_off", &["--no-parse-special"][..]),
                ("ids_no_bos", &["--no-bos"][..]),
            ] {
                let mut args = vec!["tokenize", "-m", model];
                args.extend_from_slice(flags);
                args.extend(["--", text]);
                let got: Json = serde_json::from_str(mtmd(&args).trim()).unwrap();
                assert_eq!(ids(&got), ids(&case[field]), "{dir} {field} of {text:?}");
            }
        }
        println!("{dir}: {} cases x 3 id lists identical", cases.len());
    }
}

#[test]
fn greedy_run_matches_llama_cpp_continuations() {
    for (file, dir) in MODELS {
        let Some(model) = real_model(file) else {
            continue;
        };
        let model = model.to_str().unwrap();
        let gen_ = fixture(dir, "generate.json");
        for (i, case) in gen_["prompts"].as_array().unwrap().iter().enumerate() {
            let msgs = std::env::temp_dir().join(format!("mtmd-test-{dir}-{i}.json"));
            std::fs::write(&msgs, case["messages"].to_string()).unwrap();
            let out = mtmd(&[
                "run",
                "-m",
                model,
                "--messages",
                msgs.to_str().unwrap(),
                "--temp",
                "0",
                "-n",
                "48",
                "--json",
                "-c",
                "2048",
            ]);
            let out: Json = serde_json::from_str(out.trim()).unwrap();
            let ours = ids(&out["tokens"]);
            let refs: Vec<Vec<u64>> = [
                "generated_ids",
                "generated_ids_flash_attn_off",
                "generated_ids_flash_attn_off_f32_kv",
            ]
            .iter()
            .map(|k| ids(&case[*k]))
            .collect();
            let prompt_ids = ids(&case["prompt_ids"]);
            assert_eq!(
                out["prompt_tokens"].as_u64().unwrap() as usize,
                prompt_ids.len()
            );
            // How far llama.cpp's own settings agree with each other.
            let agree = (0..refs.iter().map(Vec::len).min().unwrap())
                .take_while(|&j| refs.iter().all(|r| r[j] == refs[0][j]))
                .count();
            let matched = refs
                .iter()
                .map(|r| ours.iter().zip(r).take_while(|(a, b)| a == b).count())
                .max()
                .unwrap();
            let full = refs.contains(&ours);
            let margins: Vec<f64> = case["argmax_logit_per_step"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
                .unwrap_or_default();
            println!(
                "{dir} prompt {i}: {} tokens, identical to a llama.cpp continuation: {full}; \
                 longest common prefix {matched}; llama.cpp variants agree on {agree}",
                ours.len()
            );
            if !full && matched < ours.len() {
                println!(
                    "  diverges at step {matched}; llama.cpp argmax logits around it: {:?}",
                    &margins[matched.saturating_sub(1)..(matched + 2).min(margins.len())]
                );
            }
            assert!(
                full || matched >= agree,
                "{dir} prompt {i}: ours {ours:?} leaves llama.cpp's shared prefix at step {matched} (< {agree})"
            );
        }
    }
}

#[test]
fn no_mmap_reads_the_same_model() {
    for (file, _) in MODELS {
        let Some(model) = real_model(file) else {
            continue;
        };
        let model = model.to_str().unwrap();
        let run = |extra: &[&str]| {
            let mut args = vec![
                "run",
                "-m",
                model,
                "-p",
                "The capital of France",
                "--temp",
                "0",
                "-n",
                "8",
                "--device",
                "cpu",
                "--json",
            ];
            args.extend_from_slice(extra);
            let out: Json = serde_json::from_str(mtmd(&args).trim()).unwrap();
            ids(&out["tokens"])
        };
        let default = run(&[]);
        assert_eq!(default, run(&["--no-mmap"]), "{file}");
        assert_eq!(default, run(&["--mmap"]), "{file}");
    }
}
