"""Load test (bounded, loopback only): 64 streaming clients x 32 tokens through the official
`openai` client against `mtmd serve --parallel 8 -t 2` on the real Qwen2.5-Coder-0.5B.
Prints aggregate throughput, time to first token (p50 / p99) and the server's peak memory;
asserts only correctness (every stream completes, the engine batched the slots).

With MTMD_PEER_SERVER=/path/to/llama-server the same load also runs against llama.cpp's
server (`-np 8 -t 2`, same model and context) and the ratios are printed: that is how
docs/performance.md's side-by-side figures were taken."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests

from helpers import Server, log_dir, metric, model_dir

MODEL = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
N_CLIENTS = 64
MAX_TOKENS = 32
PARALLEL = 8
N_CTX_PER_SLOT = 512
TOPICS = ["the sea", "bread", "trains", "snow", "bees", "violins", "the moon", "chess"]


def model_path() -> Path:
    path = model_dir() / MODEL
    if path.exists():
        return path
    if os.environ.get("MTMD_REQUIRE_MODELS") == "1":
        pytest.fail(f"{path} missing and MTMD_REQUIRE_MODELS=1")
    pytest.skip(f"model not fetched (run scripts/fetch-test-models.sh): {path}")


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(m.group(1)) / 1024 if m else float("nan")


def one_stream(client: openai.OpenAI, model: str, i: int, barrier: threading.Barrier):
    barrier.wait(timeout=120)
    t0 = time.monotonic()
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"Write about {TOPICS[i % len(TOPICS)]} ({i})."}],
        stream=True,
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream_options={"include_usage": True},
    )
    first, tokens, finish = None, 0, None
    for chunk in stream:
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta and choice.delta.content and first is None:
                first = time.monotonic() - t0
            if choice.finish_reason:
                finish = choice.finish_reason
    return first, tokens, finish


def run_load(base_url: str, pid: int) -> dict[str, float]:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    model = client.models.list().data[0].id
    barrier = threading.Barrier(N_CLIENTS)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=N_CLIENTS) as pool:
        futures = [pool.submit(one_stream, client, model, i, barrier) for i in range(N_CLIENTS)]
        results = [f.result(timeout=900) for f in futures]
    wall = time.monotonic() - t0
    for i, (first, tokens, finish) in enumerate(results):
        assert finish in ("stop", "length"), f"stream {i}: no finish_reason"
        assert tokens > 0 and first is not None, f"stream {i}: no tokens"
    ttft = sorted(r[0] for r in results)
    total = sum(r[1] for r in results)
    return {
        "wall_s": wall,
        "tokens": total,
        "tokens_per_s": total / wall,
        "ttft_p50_s": ttft[len(ttft) // 2],
        "ttft_p99_s": ttft[min(len(ttft) - 1, int(len(ttft) * 0.99))],
        "peak_rss_mb": peak_rss_mb(pid),
    }


def say(text: str) -> None:
    """Past pytest's capture: the figures are the point of this test."""
    sys.__stdout__.write(text + "\n")
    sys.__stdout__.flush()


def report(name: str, r: dict[str, float]) -> None:
    say(
        f"{name}: {N_CLIENTS} clients x {MAX_TOKENS} tokens in {r['wall_s']:.1f} s, "
        f"{r['tokens_per_s']:.1f} tokens/s aggregate, TTFT p50 {r['ttft_p50_s']:.2f} s "
        f"p99 {r['ttft_p99_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB"
    )


def start_peer(binary: str, path: Path) -> tuple[subprocess.Popen, str]:
    port = 18000 + os.getpid() % 1000
    log = open(log_dir() / "peer-llama-server.log", "wb")  # noqa: SIM115
    env = {**os.environ, "LD_LIBRARY_PATH": str(Path(binary).parent)}
    cmd = [binary, "-m", str(path), "-np", str(PARALLEL), "-t", "2", "-c",
           str(N_CTX_PER_SLOT * PARALLEL), "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError("llama-server did not come up")


def test_64_streaming_clients_at_parallel_8():
    path = model_path()
    server = Server(
        "load-qwen",
        ["-m", str(path), "--parallel", str(PARALLEL), "-t", "2", "-c", str(N_CTX_PER_SLOT)],
    )
    try:
        server.wait_ready()
        device = server.get("/props").json()["device"]
        say(f"mtmd serve: model on {device}")
        assert device.startswith("cpu"), f"the load test measures the CPU engine, got {device}"
        ours = run_load(f"{server.url}/v1", server.proc.pid)
        report("mtmd serve", ours)
        m = server.metrics()
        steps = metric(m, "mtmd_step_sequences_count")
        mean = metric(m, "mtmd_step_sequences_sum") / max(steps, 1)
        say(f"mtmd serve: {steps:.0f} steps, {mean:.2f} sequences per step")
        assert mean > 2, "the slots were not decoded together"
        assert metric(m, "mtmd_time_to_first_token_seconds_count") >= N_CLIENTS
    finally:
        server.stop()

    peer = os.environ.get("MTMD_PEER_SERVER")
    if peer:
        proc, url = start_peer(peer, path)
        try:
            theirs = run_load(f"{url}/v1", proc.pid)
            report("llama-server", theirs)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        say(
            f"ratios (ours / llama-server): throughput "
            f"{ours['tokens_per_s'] / theirs['tokens_per_s']:.2f}x, TTFT p99 "
            f"{ours['ttft_p99_s'] / theirs['ttft_p99_s']:.2f}, peak RSS "
            f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}"
        )
