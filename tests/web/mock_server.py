#!/usr/bin/env python3
"""A stand-in for `mtmd serve` to work on the chat page without building the engine.

Serves crates/server/src/web/index.html from disk at `/` (edit, reload, no rebuild) and fakes
/health, /props, /v1/models and a streaming /v1/chat/completions that describes what it received.
Standard library only.

    python3 tests/web/mock_server.py [--port 8080] [--no-vision] [--audio] [--api-key KEY]
                                     [--delay 0.05] [--ignore-stream]

Messages that trigger failures (to see how the page shows them): a last user text of
"/error" gets a 400 JSON error, "/stream-error" an error event in the middle of the stream,
"/slow" a long, slow answer (to try the Stop button).
"""

import argparse
import base64
import binascii
import json
import pathlib
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = pathlib.Path(__file__).resolve().parents[2] / "crates/server/src/web/index.html"
MODEL = "mock-model"


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: the SSE body ends when the connection closes, no chunked encoding needed.
    protocol_version = "HTTP/1.0"
    opts = None

    def log_message(self, fmt, *args):
        sys.stderr.write("mock: %s\n" % (fmt % args))

    def send_json(self, status, obj):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_error_json(self, status, message, kind="invalid_request_error"):
        self.send_json(status, {"error": {"message": message, "type": kind, "code": status}})

    def authorized(self):
        key = self.opts.api_key
        if key and self.headers.get("Authorization") != "Bearer " + key:
            self.send_error_json(401, "invalid API key", "authentication_error")
            return False
        return True

    def do_GET(self):
        if self.path == "/":
            body = PAGE.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/health":
            self.send_json(200, {"status": "ok"})
        elif self.path == "/props":
            if self.authorized():
                self.send_json(200, {
                    "model_alias": MODEL,
                    "model_path": "/models/mock-model.gguf",
                    "n_ctx": 4096,
                    "modalities": {"vision": not self.opts.no_vision, "audio": self.opts.audio},
                    "chat_template": "mock",
                })
        elif self.path == "/v1/models":
            if self.authorized():
                mods = ["text"] + ([] if self.opts.no_vision else ["image"]) + (["audio"] if self.opts.audio else [])
                self.send_json(200, {"object": "list", "data": [
                    {"id": MODEL, "object": "model", "created": 0, "owned_by": "mtmd", "modalities": mods},
                ]})
        else:
            self.send_error_json(404, "no such endpoint: " + self.path, "not_found_error")

    def do_POST(self):
        if self.path != "/v1/chat/completions":
            self.send_error_json(404, "no such endpoint: " + self.path, "not_found_error")
            return
        if not self.authorized():
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(length))
            messages = req["messages"]
        except (ValueError, KeyError, TypeError) as e:
            self.send_error_json(400, "bad request: %s" % e)
            return
        if req.get("model") not in (None, MODEL):
            self.send_error_json(404, "unknown model %r" % req.get("model"), "not_found_error")
            return

        images, clips, last_text = 0, 0, ""
        for m in messages:
            content = m.get("content")
            if isinstance(content, list):
                for part in content:
                    if part.get("type") == "image_url":
                        images += 1
                        if not part["image_url"]["url"].startswith("data:image/"):
                            self.send_error_json(400, "image_url is not a data URI")
                            return
                    elif part.get("type") == "input_audio":
                        clips += 1
                        audio = part.get("input_audio") or {}
                        try:
                            data = base64.b64decode(audio.get("data", ""), validate=True)
                        except (binascii.Error, ValueError):
                            data = b""
                        if audio.get("format") not in ("wav", "mp3", "flac") or not data:
                            self.send_error_json(400, "input_audio is not base64 wav, mp3 or flac")
                            return
                    elif part.get("type") == "text" and m.get("role") == "user":
                        last_text = part.get("text", "")
            elif m.get("role") == "user":
                last_text = content or ""
        if images and self.opts.no_vision:
            self.send_error_json(400, "this model takes no images: start the server with --mmproj")
            return
        if clips and not self.opts.audio:
            self.send_error_json(400, "this model takes no audio input: start the server with --mmproj")
            return
        if last_text.strip() == "/error":
            self.send_error_json(400, "you asked for an error")
            return

        turns = sum(1 for m in messages if m.get("role") == "user")
        seen = "%d image(s)" % images + (" and %d audio clip(s)" % clips if clips else "")
        words = ("Turn %d: I see %s in this conversation and you said: %s" % (turns, seen, last_text)).split(" ")
        words += ["Here", "is", "code:\n```rust\nfn", "main()", "{", "println!(\"<b>not", "bold</b>\");", "}\n```\nDone."]
        if last_text.strip() == "/slow":
            words = ["word%d" % i for i in range(400)]
        max_tokens = req.get("max_tokens") or req.get("max_completion_tokens")
        finish = "stop"
        if isinstance(max_tokens, int) and max_tokens < len(words):
            words, finish = words[:max_tokens], "length"
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        prompt = 10 + 256 * images + 750 * clips
        usage = {"prompt_tokens": prompt, "completion_tokens": len(pieces), "total_tokens": prompt + len(pieces)}

        if not req.get("stream") or self.opts.ignore_stream:
            self.send_json(200, {
                "id": "chatcmpl-mock", "object": "chat.completion", "created": int(time.time()), "model": MODEL,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "finish_reason": finish}],
                "usage": usage,
            })
            return

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()

        def event(obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        def chunk(delta, finish_reason=None):
            return {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": int(time.time()),
                    "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        try:
            event(chunk({"role": "assistant", "content": ""}))
            for i, piece in enumerate(pieces):
                if last_text.strip() == "/stream-error" and i == 3:
                    event({"error": {"message": "the engine failed in the middle", "type": "server_error", "code": 500}})
                    return
                time.sleep(self.opts.delay)
                event(chunk({"content": piece}))
            event(chunk({}, finish))
            if (req.get("stream_options") or {}).get("include_usage"):
                last = chunk({})
                last["choices"] = []
                last["usage"] = usage
                event(last)
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.log_message("client went away (Stop)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    ap.add_argument("--no-vision", action="store_true", help="pretend the server has no --mmproj")
    ap.add_argument("--audio", action="store_true", help="pretend the --mmproj also takes audio")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--delay", type=float, default=0.05, help="seconds between streamed pieces")
    ap.add_argument("--ignore-stream", action="store_true", help="answer with one JSON object even when asked to stream")
    Handler.opts = ap.parse_args()
    server = ThreadingHTTPServer((Handler.opts.host, Handler.opts.port), Handler)
    server.daemon_threads = True
    print("mock server on http://%s:%d/" % server.server_address[:2], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
