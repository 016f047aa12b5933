//! `--device` end to end through the binary: both real text models give the CPU's greedy
//! continuation on the GPU, whole and split with `-ngl`; with Vulkan hidden, `auto` runs on
//! the CPU with one notice and `gpu` is a one-line error.

use std::process::{Command, Output};

use serde_json::Value as Json;
use testkit::real_model;

const MODELS: [(&str, &str); 2] = [
    ("gemma-3-270m-q4_k_m.gguf", "gemma-3-270m-q4_k_m"),
    (
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
    ),
];

/// Greedy tokens per run: lavapipe runs the GPU path on the CPU, slowly.
const N_GEN: &str = "8";

fn mtmd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mtmd"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn gpu_available() -> bool {
    match llm::Device::gpu() {
        Ok(_) => true,
        Err(e) => {
            testkit::skip_without_gpu(&e.to_string());
            false
        }
    }
}

fn greedy(model: &str, messages: &str, device: &[&str]) -> Vec<u64> {
    let mut args = vec![
        "run",
        "-m",
        model,
        "--messages",
        messages,
        "--temp",
        "0",
        "-n",
        N_GEN,
        "--json",
        "-c",
        "512",
    ];
    args.extend_from_slice(device);
    let out = mtmd(&args, &[]);
    assert!(
        out.status.success(),
        "mtmd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Json = serde_json::from_slice(&out.stdout).unwrap();
    json["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect()
}

#[test]
fn real_models_on_the_gpu_continue_as_on_the_cpu() {
    if !gpu_available() {
        return;
    }
    for (file, dir) in MODELS {
        let Some(model) = real_model(file) else {
            continue;
        };
        let model = model.to_str().unwrap();
        let gen_ = testkit::reference_json_file(
            &testkit::fixture("real-text")
                .join(dir)
                .join("generate.json"),
        );
        let case = &gen_["prompts"][0];
        let msgs = std::env::temp_dir().join(format!("mtmd-gpu-test-{dir}.json"));
        std::fs::write(&msgs, case["messages"].to_string()).unwrap();
        let msgs = msgs.to_str().unwrap();
        let cpu = greedy(model, msgs, &["--device", "cpu"]);
        let gpu = greedy(model, msgs, &["--device", "gpu"]);
        // Half the layers on the GPU, the output layer on the CPU.
        let split = greedy(model, msgs, &["--device", "gpu", "-ngl", "9"]);
        println!("{dir}: cpu {cpu:?}\n{dir}: gpu {gpu:?}\n{dir}: -ngl 9 {split:?}");
        assert_eq!(gpu, cpu, "{dir}: --device gpu");
        assert_eq!(split, cpu, "{dir}: --device gpu -ngl 9");
    }
}

/// The Vulkan loader finds no driver at all.
const NO_VULKAN: [(&str, &str); 3] = [
    ("VK_ICD_FILENAMES", "/nonexistent/mtmd-no-icd.json"),
    ("VK_DRIVER_FILES", "/nonexistent/mtmd-no-icd.json"),
    ("MTMD_GPU_ALLOW_CPU_ADAPTER", "1"),
];

#[test]
fn without_any_adapter_auto_runs_on_the_cpu_and_gpu_is_an_error() {
    let model = testkit::fixture("gemma3").join("model.gguf");
    let model = model.to_str().unwrap();
    let run = |device: &str| {
        mtmd(
            &[
                "run", "-m", model, "-p", "hello", "-n", "2", "--temp", "0", "--device", device,
            ],
            &NO_VULKAN,
        )
    };
    let auto = run("auto");
    let stderr = String::from_utf8_lossy(&auto.stderr);
    assert!(auto.status.success(), "auto: {stderr}");
    assert_eq!(
        stderr.matches("running on the CPU").count(),
        1,
        "one notice: {stderr}"
    );
    let gpu = run("gpu");
    let stderr = String::from_utf8_lossy(&gpu.stderr);
    assert_eq!(gpu.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("--device gpu"), "{stderr}");
    println!("auto notice and gpu error:\n{stderr}");
}

/// `auto` asks a child process first: a run that ends up on the CPU because the only adapter
/// is a software one (Mesa's lavapipe here) never maps a Vulkan driver (lavapipe brings
/// ~48 MB of LLVM that would stay resident), and says why in its notice.
#[test]
fn auto_without_a_usable_gpu_keeps_vulkan_out_of_the_process() {
    let exe = env!("CARGO_BIN_EXE_mtmd");
    let probe = Command::new(exe)
        .arg("gpu-probe")
        .env_remove("MTMD_GPU_ALLOW_CPU_ADAPTER")
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        answer.starts_with("ok ") || answer.starts_with("none "),
        "{answer}"
    );
    if !answer.starts_with("none only a software Vulkan adapter") {
        println!("skipped: needs a software Vulkan adapter and no GPU (probe: {answer})");
        return;
    }
    let model = testkit::fixture("gemma3").join("model.gguf");
    // `chat` stays up until its stdin closes: its mappings can be read meanwhile.
    let mut chat = Command::new(exe)
        .args(["chat", "-m", model.to_str().unwrap(), "--device", "auto"])
        .env_remove("MTMD_GPU_ALLOW_CPU_ADAPTER")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(chat.stderr.take().unwrap());
    let mut notice = String::new();
    while std::io::BufRead::read_line(&mut stderr, &mut notice).unwrap() > 0
        && !notice.contains("running on the CPU")
    {}
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", chat.id())).unwrap();
    drop(chat.stdin.take());
    chat.wait().unwrap();
    assert!(
        notice.contains("only a software Vulkan adapter"),
        "notice: {notice}"
    );
    let drivers: Vec<&str> = maps
        .lines()
        .filter(|l| l.contains("libvulkan") || l.contains("libLLVM"))
        .collect();
    assert!(drivers.is_empty(), "Vulkan mapped: {drivers:?}");
}
