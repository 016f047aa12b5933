//! `mtmd chat` driven through a piped stdin on the tiny Qwen2-VL fixture: text turns, an
//! image turn, a bad image path, `/clear` and `/quit`, with the KV cache reused across turns.

use std::io::Write;
use std::process::{Command, Stdio};

fn fixture(file: &str) -> String {
    testkit::fixture("qwen2vl")
        .join(file)
        .to_string_lossy()
        .into_owned()
}

/// Runs `mtmd chat` greedily on `input`; returns (stdout, stderr).
fn chat(extra: &[&str], input: &str) -> (String, String) {
    let model = fixture("model.gguf");
    let mut args = vec![
        "chat",
        "-m",
        &model,
        "--temp",
        "0",
        "-n",
        "6",
        "-c",
        "1024",
        "-t",
        "1",
        "--verbose",
    ];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_mtmd"))
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mtmd");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "mtmd chat failed: {stderr}");
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

/// `(evaluated, total)` of every "prompt: evaluated N of M tokens" line.
fn prompt_stats(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("prompt: evaluated "))
        .map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            (words[0].parse().unwrap(), words[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn text_turns_reuse_the_cache_and_clear_resets_it() {
    let (stdout, stderr) = chat(
        &[],
        "Hello there\nTell me more.\n/clear\nHello there\n/quit\nnot read\n",
    );
    let stats = prompt_stats(&stderr);
    println!("{stats:?}");
    assert_eq!(stats.len(), 3, "{stderr}");
    let (first, second, after_clear) = (stats[0], stats[1], stats[2]);
    assert_eq!(first.0, first.1, "the first turn evaluates everything");
    assert!(second.1 > first.1);
    assert!(
        second.0 < second.1 && second.0 <= second.1 - first.1 + 1,
        "second turn re-evaluated too much: {second:?} after {first:?}"
    );
    assert_eq!(after_clear, first, "/clear starts from an empty cache");
    assert_eq!(
        stdout.lines().count(),
        3,
        "one answer line per turn: {stdout:?}"
    );
    // Text-only chat refuses images with one error line and goes on.
    let (_, stderr) = chat(&[], "/image x.png\nHi\n");
    assert!(
        stderr.contains("error: images need a vision projector"),
        "{stderr}"
    );
    assert_eq!(prompt_stats(&stderr).len(), 1);
}

#[test]
fn image_turns_reuse_the_image_and_bad_paths_do_not_end_the_chat() {
    let mmproj = fixture("mmproj.gguf");
    let photo = fixture("photo.png");
    let input = format!(
        "/image {photo}\nDescribe this image.\n/image /no/such/image.png\nWhat else?\n/quit\n"
    );
    let (stdout, stderr) = chat(&["--mmproj", &mmproj], &input);
    let stats = prompt_stats(&stderr);
    println!("{stats:?}");
    assert_eq!(stats.len(), 2, "{stderr}");
    let (first, second) = (stats[0], stats[1]);
    assert_eq!(first.0, first.1);
    // The image tokens (dozens of cells) sit in the reused prefix of the second turn.
    assert!(
        second.0 <= second.1 - first.1 + 1,
        "second turn re-evaluated the image: {second:?} after {first:?}"
    );
    assert_eq!(
        stderr.matches("error:").count(),
        1,
        "one error line for the bad path: {stderr}"
    );
    assert!(stderr.contains("/no/such/image.png"), "{stderr}");
    assert!(
        stdout.lines().count() >= 2,
        "an answer per turn: {stdout:?}"
    );
}
