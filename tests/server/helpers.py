"""Shared helpers of the `mtmd serve` end-to-end tests: spawning a server, images, metrics."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import struct
import subprocess
import time
import zlib
from pathlib import Path

import openai
import requests

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
GEMMA3 = FIXTURES / "gemma3"
QWEN2AUDIO = FIXTURES / "qwen2audio"
VOXTRAL = FIXTURES / "voxtral"
API_KEY = "e2e-secret-key"
READY_TIMEOUT_S = 120.0

# Every server still running, so a failing test can show their logs.
LIVE_SERVERS: list[Server] = []


def mtmd_bin() -> Path:
    """The binary under test: $MTMD_BIN, else the newer of target/ci/mtmd and target/debug/mtmd
    (the newer one, because a stale build of the other profile may lie around)."""
    env = os.environ.get("MTMD_BIN")
    if env:
        return Path(env).resolve()
    candidates = [ROOT / "target" / p / "mtmd" for p in ("ci", "debug")]
    present = [c for c in candidates if c.exists()]
    if not present:
        raise RuntimeError("no mtmd binary: build it (cargo build -p cli) or set MTMD_BIN")
    return max(present, key=lambda p: p.stat().st_mtime)


def log_dir() -> Path:
    d = Path(os.environ.get("MTMD_E2E_LOG_DIR", ROOT / "target" / "e2e-logs"))
    d.mkdir(parents=True, exist_ok=True)
    return d


_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


class Server:
    """One `mtmd serve` process on 127.0.0.1, its output in a log file."""

    def __init__(self, name: str, args: list[str], api_key: str | None = None):
        self.name = name
        self.api_key = api_key
        # Port 0: the server picks a free port and prints it, so no other process can take
        # the port between our choice and its bind.
        self.port = 0
        self.url = ""
        self.log_path = log_dir() / f"{name}.log"
        cmd = [str(mtmd_bin()), "serve", *args, "--host", "127.0.0.1", "--port", "0"]
        if api_key:
            cmd += ["--api-key", api_key]
        self.cmd = cmd
        # Open for the process's whole life; closed in stop().
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self._log.write((" ".join(cmd) + "\n").encode())
        self._log.flush()
        # The key comes from --api-key only, never from a developer's environment.
        env = {k: v for k, v in os.environ.items() if k != "MTMD_API_KEY"}
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        LIVE_SERVERS.append(self)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _find_address(self) -> bool:
        m = _LISTENING.search(self.log_path.read_text(errors="replace"))
        if m:
            self.port = int(m.group(1))
            self.url = f"http://127.0.0.1:{self.port}"
        return m is not None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        last = "no 'listening on' line yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server {self.name} exited with {self.proc.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            if not self.url and not self._find_address():
                time.sleep(0.05)
                continue
            try:
                r = requests.get(f"{self.url}/health", headers=self.headers(), timeout=2)
                if r.status_code == 200:
                    return
                last = f"{r.status_code} {r.text[:200]}"
            except requests.RequestException as e:
                last = repr(e)
            time.sleep(0.2)
        raise RuntimeError(
            f"server {self.name} not ready after {timeout}s (last /health: {last}):\n"
            + self.log_tail()
        )

    def client(self, api_key: str | None = None, **kw) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=api_key or self.api_key or "unused",
            max_retries=0,
            timeout=kw.pop("timeout", 120.0),
            **kw,
        )

    def get(self, path: str, **kw) -> requests.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return requests.get(self.url + path, headers=headers, timeout=kw.pop("timeout", 30), **kw)

    def post(self, path: str, **kw) -> requests.Response:
        headers = {**self.headers(), **kw.pop("headers", {})}
        return requests.post(self.url + path, headers=headers, timeout=kw.pop("timeout", 120), **kw)

    def metrics(self) -> dict[str, float]:
        r = self.get("/metrics")
        assert r.status_code == 200, f"/metrics: {r.status_code} {r.text[:300]}"
        return parse_metrics(r.text)

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)


def raw_post(server: Server, path: str, body: bytes, headers: dict[str, str | None] | None = None):
    """POSTs `body` as is and returns (status, parsed-or-raw body). Tolerates the server
    answering (e.g. 413) and closing before the whole body is sent."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    hdrs = {"Content-Type": "application/json", **server.headers(), **(headers or {})}
    hdrs = {k: v for k, v in hdrs.items() if v is not None}  # None: leave the header out
    try:
        try:
            conn.request("POST", path, body=body, headers=hdrs)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        data = resp.read()
        try:
            return resp.status, json.loads(data)
        except ValueError:
            return resp.status, data
    finally:
        conn.close()


def assert_error_shape(body, status: int) -> dict:
    """OpenAI's error object: {"error": {"message", "type", "code"}}."""
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), (
        f"HTTP {status}: expected an OpenAI error object, got {body!r}"
    )
    err = body["error"]
    for key in ("message", "type", "code"):
        assert key in err, f"HTTP {status}: error object lacks {key!r}: {err!r}"
    assert isinstance(err["message"], str) and err["message"], err
    return err


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {"name" or "name{labels}": value}, plus per-name sums over labels."""
    out: dict[str, float] = {}
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        if labels:
            out[name + normalize_labels(labels)] = v
        else:
            out[name] = v
        sums[name] = sums.get(name, 0.0) + v
    for name, v in sums.items():
        out.setdefault(name, v)
    return out


def normalize_labels(labels: str) -> str:
    """`{b="2",a="1"}` -> `{a="1",b="2"}` so lookups do not depend on label order."""
    pairs = re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels)
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(pairs)) + "}"


def metric(m: dict[str, float], name: str, **labels: str) -> float:
    if labels:
        key = name + normalize_labels(",".join(f'{k}="{v}"' for k, v in labels.items()))
        return m.get(key, 0.0)
    assert name in m, f"/metrics has no {name}; it has: {sorted(m)}"
    return m[name]


def make_png(width: int, height: int, seed: int) -> bytes:
    """A valid RGB PNG whose pixels depend on `seed`: a fresh image no cache has seen."""
    rows = bytearray()
    state = seed * 2654435761 % 2**32 or 1
    for _ in range(height):
        rows.append(0)  # filter: none
        for _ in range(width * 3):
            state = (state * 1103515245 + 12345) % 2**31
            rows.append(state >> 23)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(rows)))
        + chunk(b"IEND", b"")
    )


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def file_data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}[path.suffix.lower()]
    return data_uri(path.read_bytes(), mime)


def image_part(uri: str) -> dict:
    return {"type": "image_url", "image_url": {"url": uri}}


def audio_part(path: Path) -> dict:
    """An OpenAI `input_audio` part holding the file at `path` (wav, flac or mp3)."""
    data = base64.b64encode(path.read_bytes()).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": path.suffix[1:]}}


def make_wav(seconds: float, rate: int = 8000) -> bytes:
    """A mono 16-bit PCM WAV of a quiet sawtooth, `seconds` long."""
    n = int(seconds * rate)
    period = struct.pack("<200h", *[i * 40 - 4000 for i in range(200)])
    samples = period * (n // 200) + period[: 2 * (n % 200)]
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def serve_flags() -> str:
    """`mtmd serve --help`, to tell which flags the binary under test has."""
    out = subprocess.run(
        [str(mtmd_bin()), "serve", "--help"], capture_output=True, text=True, check=False
    )
    return out.stdout + out.stderr


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def find_modalities(obj) -> list[str] | None:
    """The first list of strings containing "text" anywhere in `obj` (the modalities list,
    whatever key the server files it under)."""
    if isinstance(obj, list):
        if obj and all(isinstance(x, str) for x in obj) and "text" in obj:
            return obj
        for x in obj:
            found = find_modalities(x)
            if found is not None:
                return found
    elif isinstance(obj, dict):
        for key in ("input_modalities", "modalities"):
            if key in obj:
                found = find_modalities(obj[key])
                if found is not None:
                    return found
        for v in obj.values():
            found = find_modalities(v)
            if found is not None:
                return found
    return None


def model_dir() -> Path:
    env = os.environ.get("MTMD_MODEL_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mtmd-rs" / "models"
