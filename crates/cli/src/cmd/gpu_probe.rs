//! `mtmd gpu-probe` (hidden): `--device auto` opens the GPU in a child process first, so that a
//! run which ends up on the CPU never loads a Vulkan driver into the main process (Mesa's
//! software driver maps ~48 MB of LLVM that stays resident) and a driver that crashes or hangs
//! while enumerating costs a notice, not the run.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tensor::{Device, TensorError};

/// The subcommand's name, as the parent runs it.
pub const SUBCOMMAND: &str = "gpu-probe";

/// How long a driver may take to enumerate its adapters (lavapipe: ~0.2 s).
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// The child: prints `ok <device>` or `none <why>` on stdout.
pub fn run() -> anyhow::Result<()> {
    match Device::gpu() {
        Ok(device) => println!("ok {device}"),
        Err(TensorError::Gpu(reason)) => println!("none {}", one_line(&reason)),
        Err(e) => println!("none {}", one_line(&e.to_string())),
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The parent ([`Device::set_auto_probe`]): `Ok` when the child opened a GPU (or could not be
/// started: the device is then opened here, as without a probe), else why there is none.
pub fn probe() -> Result<(), String> {
    let Ok(exe) = std::env::current_exe() else {
        return Ok(());
    };
    let Ok(mut child) = Command::new(exe)
        .arg(SUBCOMMAND)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return Ok(());
    };
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < PROBE_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the GPU driver did not list its adapters within {} s",
                    PROBE_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for the GPU probe: {e}")),
        }
    };
    let mut answer = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut answer);
    }
    parse_answer(&answer, status.success())
        .unwrap_or_else(|| Err(format!("the GPU probe failed ({status})")))
}

/// The child's line; `None` when it gave none (it crashed).
fn parse_answer(answer: &str, exited_ok: bool) -> Option<Result<(), String>> {
    let line = answer.lines().next()?;
    if !exited_ok {
        return None;
    }
    if line.starts_with("ok ") {
        Some(Ok(()))
    } else {
        line.strip_prefix("none ").map(|why| Err(why.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read() {
        assert_eq!(parse_answer("ok gpu (RTX)\n", true), Some(Ok(())));
        assert_eq!(
            parse_answer("none no Vulkan adapter found\n", true),
            Some(Err("no Vulkan adapter found".into()))
        );
        // A crash, or a line that is neither answer.
        assert_eq!(parse_answer("", false), None);
        assert_eq!(parse_answer("ok gpu\n", false), None);
        assert_eq!(parse_answer("garbage\n", true), None);
    }
}
