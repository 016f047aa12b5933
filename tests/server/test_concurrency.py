"""16 streaming requests at once over 4 slots: all complete, and each answer equals the same
request run alone afterwards (temperature 0), so slots neither mix nor disturb each other."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from conftest import VISION_ALIAS
from helpers import data_uri, image_part, make_png, metric, text_part

N_REQUESTS = 16
MAX_TOKENS = 32  # 2 cores in CI: keep the whole test at a few seconds

PROMPTS = [
    "Tell me about the sea.",
    "Hello",
    "Why do cats purr?",
    "What is 7 times 8?",
    "Write a haiku about bread",
    "Describe a violin.",
    "winter is coming",
    "Count to ten",
    "How far away is the moon?",
    "coffee or tea?",
    "An old library at night...",
    "Rain!",
    "Is a lighthouse useful today?",
    "Explain chess openings",
    "tomatoes: fruit?",
    "wind",
]


def request_messages(i: int) -> list[dict]:
    # No shared wording: the tiny random model answers similar prompts alike.
    text = PROMPTS[i]
    if i % 4 == 3:
        # Every fourth request carries its own image, so encoding overlaps generation.
        uri = data_uri(make_png(32 + i, 24 + i, seed=1000 + i))
        return [{"role": "user", "content": [image_part(uri), text_part(text)]}]
    return [{"role": "user", "content": text}]


def run_stream(client, i: int, barrier: threading.Barrier | None = None):
    if barrier is not None:
        barrier.wait(timeout=60)
    stream = client.chat.completions.create(
        model=VISION_ALIAS,
        messages=request_messages(i),
        stream=True,
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    first = last = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                text += choice.delta.content
                last = time.monotonic()
                first = first or last
            if choice.finish_reason:
                finish = choice.finish_reason
    TIMES[i] = (first, last)
    return text, finish, usage.completion_tokens if usage else None


# Request index -> (first, last) content chunk time of its latest run.
TIMES: dict[int, tuple[float | None, float | None]] = {}


def max_overlap(spans) -> int:
    """The most answers that were streaming at one moment."""
    edges = sorted([(a, 1) for a, b in spans] + [(b, -1) for a, b in spans])
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def test_16_concurrent_streams_match_sequential_runs(vision_server):
    client = vision_server.client()
    barrier = threading.Barrier(N_REQUESTS)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=N_REQUESTS) as pool:
        futures = [pool.submit(run_stream, client, i, barrier) for i in range(N_REQUESTS)]
        concurrent = [f.result(timeout=300) for f in futures]
    t_concurrent = time.monotonic() - t0
    spans = [TIMES[i] for i in range(N_REQUESTS) if TIMES[i][0] is not None]
    overlap = max_overlap(spans)

    t0 = time.monotonic()
    sequential = [run_stream(client, i) for i in range(N_REQUESTS)]
    t_sequential = time.monotonic() - t0
    distinct = len({text for text, _, _ in concurrent})
    print(
        f"{N_REQUESTS} requests: concurrent {t_concurrent:.1f}s, one at a time "
        f"{t_sequential:.1f}s, {distinct} distinct answers, up to {overlap} streaming at once"
    )

    for i, (got, want) in enumerate(zip(concurrent, sequential)):
        assert got[1] in ("stop", "length"), f"request {i} has no finish_reason: {got}"
        assert got[2] is not None and got[2] > 0, f"request {i} has no usage: {got}"
        assert got == want, f"request {i}: concurrent {got!r} != alone {want!r}"
    # Different prompts give different answers: the slots did not serve one another's prompt.
    assert distinct >= N_REQUESTS // 2, concurrent
    # --parallel 4: answers stream side by side, not one after another.
    assert overlap >= 2, f"at most {overlap} answer streamed at a time"
    assert metric(vision_server.metrics(), "mtmd_queue_depth") == 0


def _busy_slots(m: dict[str, float]) -> float:
    names = [k for k in m if "slots_busy" in k or "slots_processing" in k]
    return sum(m[k] for k in names if "{" not in k)


def test_client_disconnect_cancels_generation(vision_server):
    """Closing a stream mid-answer frees its slot long before max_tokens would."""
    max_tokens = 1500
    before = vision_server.metrics()
    body = {
        "model": VISION_ALIAS,
        "messages": [{"role": "user", "content": "Tell me a very long story."}],
        "stream": True,
        "temperature": 0,
        "max_tokens": max_tokens,
    }
    with vision_server.post("/v1/chat/completions", json=body, stream=True) as r:
        assert r.status_code == 200, r.text
        lines = 0
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data: "):
                lines += 1
            if lines >= 3:
                break
    # The slot becomes free and the server keeps answering.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = vision_server.metrics()
        if _busy_slots(m) == 0 and metric(m, "mtmd_queue_depth") == 0:
            break
        time.sleep(0.1)
    time.sleep(0.5)
    after = vision_server.metrics()
    generated = metric(after, "mtmd_generated_tokens_total") - metric(
        before, "mtmd_generated_tokens_total"
    )
    assert generated < max_tokens, f"the disconnected request generated {generated} tokens"
    assert vision_server.get("/health").status_code == 200
