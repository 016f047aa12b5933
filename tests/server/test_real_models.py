"""The two real text models (scripts/fetch-test-models.sh): a greedy chat completion through
the server equals `mtmd run --temp 0` on the same messages. Skipped when a model is absent,
unless MTMD_REQUIRE_MODELS=1, then it fails."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from helpers import ROOT, Server, model_dir, mtmd_bin

MODELS = ["gemma-3-270m-q4_k_m.gguf", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"]
N_CTX = "2048"
MAX_TOKENS = 32
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And what is the capital of Italy? Say something about it."},
]


def model_path(file: str):
    path = model_dir() / file
    if path.exists():
        return path
    if os.environ.get("MTMD_REQUIRE_MODELS") == "1":
        pytest.fail(f"{path} missing and MTMD_REQUIRE_MODELS=1 (run scripts/fetch-test-models.sh)")
    pytest.skip(f"model not fetched (run scripts/fetch-test-models.sh): {path}")


@pytest.fixture(scope="module", params=MODELS)
def real_server(request):
    path = model_path(request.param)
    server = Server("real-" + path.stem, ["-m", str(path), "--parallel", "1", "-c", N_CTX])
    try:
        server.wait_ready()
        yield path, server
    finally:
        server.stop()


def test_greedy_chat_equals_mtmd_run(real_server, tmp_path):
    path, server = real_server
    msgs = tmp_path / "messages.json"
    msgs.write_text(json.dumps(CONVERSATION))
    out = subprocess.run(
        [
            str(mtmd_bin()),
            "run",
            "-m",
            str(path),
            "--messages",
            str(msgs),
            "--temp",
            "0",
            "-n",
            str(MAX_TOKENS),
            "-c",
            N_CTX,
            "--json",
        ],
        capture_output=True,
        check=False,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    want = json.loads(out.stdout.strip().splitlines()[-1])

    client = server.client()
    model = client.models.list().data[0].id
    r = client.chat.completions.create(
        model=model, messages=CONVERSATION, temperature=0, max_tokens=MAX_TOKENS
    )
    got = r.choices[0].message.content
    print(f"{path.name}: {got!r}")
    assert got == want["text"], f"server {got!r}\n   run {want['text']!r}"
    assert r.usage.completion_tokens == len(want["tokens"])
    assert r.usage.prompt_tokens == want["prompt_tokens"]
    assert r.choices[0].finish_reason == want["finish_reason"]

    # The streamed answer is the same text.
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=model,
            messages=CONVERSATION,
            temperature=0,
            max_tokens=MAX_TOKENS,
            stream=True,
        )
        if c.choices
    )
    assert streamed == got


def test_four_turn_conversation_evaluates_only_new_tokens(real_server):
    """Each follow-up turn reuses everything the slot holds, the previous answer included
    (batch-invariant kernels make the cached cells equal a fresh evaluation): the usage's
    `prompt_tokens_details.cached_tokens` covers the previous prompt and answer."""
    path, server = real_server
    client = server.client()
    model = client.models.list().data[0].id
    messages = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."}]
    previous = None
    for question in [
        "Name a primary color.",
        "Name another one.",
        "And a third?",
        "Which of them is warmest?",
    ]:
        messages.append({"role": "user", "content": question})
        r = client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_tokens=12
        )
        details = r.usage.prompt_tokens_details
        cached = (details.cached_tokens or 0) if details else 0
        print(
            f"{path.name}: prompt {r.usage.prompt_tokens}, cached {cached}, "
            f"evaluated {r.usage.prompt_tokens - cached}"
        )
        if previous is not None:
            # The previous prompt and answer, less the last sampled token (never decoded).
            held = previous.prompt_tokens + previous.completion_tokens - 1
            assert cached >= held, f"cached {cached} < held {held} ({r.usage})"
        messages.append({"role": "assistant", "content": r.choices[0].message.content})
        previous = r.usage
