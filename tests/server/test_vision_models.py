"""Every tiny vision fixture (Gemma 3, Qwen2-VL, Qwen2.5-VL, Qwen3-VL): a greedy image chat
through the server equals `mtmd run --image` on the same image and text, streamed or not."""

from __future__ import annotations

import json
import subprocess

import pytest

from helpers import FIXTURES, ROOT, Server, file_data_uri, image_part, mtmd_bin, text_part

ARCHS = ["gemma3", "qwen2vl", "qwen25vl", "qwen3vl"]
QUESTION = "What is in this picture?"
MAX_TOKENS = 16
N_CTX = "2048"


@pytest.fixture(scope="module", params=ARCHS)
def arch_server(request):
    d = FIXTURES / request.param
    server = Server(
        "vision-" + request.param,
        [
            "-m",
            str(d / "model.gguf"),
            "--mmproj",
            str(d / "mmproj.gguf"),
            "--parallel",
            "2",
            "-c",
            N_CTX,
        ],
    )
    try:
        server.wait_ready()
        yield d, server
    finally:
        server.stop()


def mtmd_run(d, image) -> dict:
    out = subprocess.run(
        [
            str(mtmd_bin()), "run", "-m", str(d / "model.gguf"), "--mmproj", str(d / "mmproj.gguf"),
            "--image", str(image), "-p", QUESTION, "--temp", "0", "-n", str(MAX_TOKENS),
            "-c", N_CTX, "--json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("image", ["photo.png", "photo2.jpg"])
def test_image_chat_equals_mtmd_run(arch_server, image):
    d, server = arch_server
    want = mtmd_run(d, d / image)
    client = server.client()
    model = client.models.list().data[0].id
    messages = [
        {"role": "user", "content": [image_part(file_data_uri(d / image)), text_part(QUESTION)]}
    ]
    r = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=MAX_TOKENS
    )
    got = r.choices[0].message.content
    assert r.usage.prompt_tokens == want["prompt_tokens"], (r.usage, want)
    assert got == want["text"], f"{d.name}/{image}: server {got!r}\n   run {want['text']!r}"
    assert r.usage.completion_tokens == len(want["tokens"])
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model=model, messages=messages, temperature=0, max_tokens=MAX_TOKENS, stream=True
        )
        if c.choices
    )
    assert streamed == got
