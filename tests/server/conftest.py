"""Fixtures: `mtmd serve` processes on free 127.0.0.1 ports, started once per session and
killed at the end; a failing test gets the tail of every running server's log in its report."""

from __future__ import annotations

import os

import pytest

from helpers import API_KEY, GEMMA3, LIVE_SERVERS, QWEN2AUDIO, Server

# These tests check the server, on the CPU. scripts/test.sh lets Mesa's software Vulkan count
# as a GPU for the kernel tests; left in the environment, `--device auto` (the default) would
# run every server and `mtmd run` here on it, hundreds of times slower than the CPU (the GPU
# paths have their own tests in the Rust suite).
os.environ.pop("MTMD_GPU_ALLOW_CPU_ADAPTER", None)

VISION_ALIAS = "tiny-gemma3"
# Small enough that the 413 test stays cheap, large enough for two fixture photos.
VISION_MAX_BODY_MB = 1


def _start(name: str, args: list[str], api_key: str | None = None) -> Server:
    server = Server(name, args, api_key=api_key)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def vision_server():
    """The tiny random-weight Gemma 3 with its mmproj: 4 slots, an API key, a 1 MB body limit."""
    server = _start(
        "vision",
        [
            "-m",
            str(GEMMA3 / "model.gguf"),
            "--mmproj",
            str(GEMMA3 / "mmproj.gguf"),
            "--parallel",
            "4",
            "-c",
            "2048",
            "--alias",
            VISION_ALIAS,
            "--max-body-mb",
            str(VISION_MAX_BODY_MB),
            "--media-cache-mb",
            "64",
        ],
        api_key=API_KEY,
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def vision_client(vision_server):
    return vision_server.client()


@pytest.fixture(scope="session")
def text_server():
    """The same tiny text model without an mmproj (and without an API key)."""
    server = _start(
        "text-only",
        ["-m", str(GEMMA3 / "model.gguf"), "--parallel", "1", "-c", "1024"],
    )
    yield server
    server.stop()


AUDIO_ALIAS = "tiny-qwen2audio"


@pytest.fixture(scope="session")
def audio_server():
    """The tiny random-weight Qwen2-Audio with its audio mmproj: 2 slots, an f32 KV cache (the
    fixture's reference was computed with one), a media cache."""
    server = _start(
        "audio",
        [
            "-m",
            str(QWEN2AUDIO / "model.gguf"),
            "--mmproj",
            str(QWEN2AUDIO / "mmproj.gguf"),
            "--parallel",
            "2",
            "-c",
            "2048",
            "--kv-type",
            "f32",
            "--alias",
            AUDIO_ALIAS,
            "--media-cache-mb",
            "64",
        ],
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def audio_client(audio_server):
    return audio_server.client()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for server in list(LIVE_SERVERS):
            report.sections.append(
                (f"server {server.name} log ({server.log_path})", server.log_tail(60))
            )
    return report


def pytest_sessionfinish(session, exitstatus):
    # Never leave a server behind, whatever happened to the fixtures.
    for server in list(LIVE_SERVERS):
        server.stop()
