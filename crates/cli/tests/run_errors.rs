//! Bad input to `mtmd run` / `tokenize`: one clear `error:` line, exit status 1, no panic.

use std::process::Command;

fn fixture(rel: &str) -> String {
    testkit::fixture(rel).to_string_lossy().into_owned()
}

fn fails_with(args: &[&str], needle: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "{args:?}: one line expected, got {stderr}"
    );
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(
        stderr.contains(needle),
        "{args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"));
}

#[test]
fn missing_corrupt_and_unsupported_models_are_clean_errors() {
    fails_with(
        &["run", "-m", "/nonexistent/model.gguf", "-p", "hi"],
        "No such file",
    );
    let bytes = std::fs::read(fixture("qwen2vl/model.gguf")).unwrap();
    let truncated = std::env::temp_dir().join("mtmd-truncated-model.gguf");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    fails_with(
        &["run", "-m", truncated.to_str().unwrap(), "-p", "hi"],
        "byte",
    );
    fails_with(
        &["run", "-m", &fixture("gemma3/mmproj.gguf"), "-p", "hi"],
        "unsupported model architecture 'clip'",
    );
    fails_with(
        &["tokenize", "-m", truncated.to_str().unwrap(), "hi"],
        "byte",
    );
}

#[test]
fn prompt_longer_than_context_is_a_clean_error() {
    let long = "hello ".repeat(600);
    fails_with(
        &[
            "run",
            "-m",
            &fixture("qwen2vl/model.gguf"),
            "-p",
            &long,
            "-c",
            "128",
        ],
        "context",
    );
}

#[test]
fn bad_messages_file_is_a_clean_error() {
    let path = std::env::temp_dir().join("mtmd-bad-messages.json");
    std::fs::write(&path, "{\"not\": \"an array\"}").unwrap();
    fails_with(
        &[
            "run",
            "-m",
            &fixture("qwen2vl/model.gguf"),
            "--messages",
            path.to_str().unwrap(),
        ],
        "messages",
    );
}

#[test]
fn tiny_model_generates_deterministically_with_a_seed() {
    let run = || {
        let out = Command::new(env!("CARGO_BIN_EXE_mtmd"))
            .args([
                "run",
                "-m",
                &fixture("qwen2vl/model.gguf"),
                "-p",
                "hello",
                "-n",
                "12",
                "--seed",
                "7",
                "--json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(run(), run());
}
