"""Chat, streaming, images, completions, models, props and metrics through the official
`openai` client against the tiny Gemma 3 fixture (random weights: the text is gibberish,
but deterministic at temperature 0)."""

from __future__ import annotations

import json

from conftest import VISION_ALIAS
from helpers import (
    GEMMA3,
    data_uri,
    file_data_uri,
    find_modalities,
    image_part,
    make_png,
    metric,
    text_part,
)

# Gemma 3's projector emits 16 embeddings per image in the fixture; the image's begin/end
# markers add a few text tokens around them.
IMAGE_TOKENS = 16
IMAGE_FRAMING_MAX = 8


def chat(client, messages, **kw):
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 16)
    return client.chat.completions.create(model=VISION_ALIAS, messages=messages, **kw)


def stream_text(client, messages, **kw):
    """(text, finish_reason, usage-or-None, number of content chunks) of a streamed answer."""
    kw.setdefault("temperature", 0)
    kw.setdefault("max_tokens", 16)
    stream = client.chat.completions.create(
        model=VISION_ALIAS, messages=messages, stream=True, **kw
    )
    text, finish, usage, n = "", None, None, 0
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta and choice.delta.content:
                text += choice.delta.content
                n += 1
            if choice.finish_reason:
                assert finish is None, "two finish_reason chunks"
                finish = choice.finish_reason
    return text, finish, usage, n


def test_plain_chat(vision_client):
    r = chat(vision_client, [{"role": "user", "content": "Hello, who are you?"}])
    assert r.object == "chat.completion"
    assert r.model == VISION_ALIAS
    assert len(r.choices) == 1
    msg = r.choices[0].message
    assert msg.role == "assistant"
    assert isinstance(msg.content, str) and msg.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert 0 < r.usage.completion_tokens <= 16
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # Deterministic at temperature 0.
    again = chat(vision_client, [{"role": "user", "content": "Hello, who are you?"}])
    assert again.choices[0].message.content == msg.content


def test_max_tokens_gives_length(vision_client):
    r = chat(vision_client, [{"role": "user", "content": "Count to ten"}], max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r = chat(
        vision_client,
        [{"role": "user", "content": "Count to ten"}],
        max_tokens=None,
        max_completion_tokens=2,
    )
    assert r.usage.completion_tokens == 2


def test_stop_string_cuts_the_answer(vision_client):
    messages = [{"role": "user", "content": "Write a poem about the sea."}]
    full = chat(vision_client, messages).choices[0].message.content
    assert len(full) >= 6, f"answer too short to pick a stop string from: {full!r}"
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    r = chat(vision_client, messages, stop=[stop])
    assert r.choices[0].message.content == expected, f"stop={stop!r} full={full!r}"
    assert r.choices[0].finish_reason == "stop"
    # The streamed answer is cut the same way, the stop string never leaks into a chunk.
    text, finish, _, _ = stream_text(vision_client, messages, stop=stop)
    assert (text, finish) == (expected, "stop")


def test_streaming_equals_non_streaming(vision_client):
    messages = [{"role": "user", "content": "Tell me a joke"}]
    full = chat(vision_client, messages)
    text, finish, usage, n = stream_text(
        vision_client, messages, stream_options={"include_usage": True}
    )
    assert text == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert n >= 2, "the answer came in one piece: not streamed"
    assert usage is not None, "stream_options.include_usage gave no usage chunk"
    assert usage.prompt_tokens == full.usage.prompt_tokens
    assert usage.completion_tokens == full.usage.completion_tokens
    # Without include_usage no usage chunk is sent.
    _, _, usage, _ = stream_text(vision_client, messages)
    assert usage is None


def test_stream_wire_format(vision_server):
    """Server-sent events: `data: {json}` lines, ending with `data: [DONE]`."""
    r = vision_server.post(
        "/v1/chat/completions",
        json={
            "model": VISION_ALIAS,
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
            "max_tokens": 4,
            "temperature": 0,
        },
        stream=True,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [line for line in r.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "data: [DONE]", events[-3:]
    ids = set()
    for line in events[:-1]:
        assert line.startswith("data: "), line
        obj = json.loads(line[len("data: ") :])
        assert obj["object"] == "chat.completion.chunk"
        ids.add(obj["id"])
    assert len(ids) == 1, f"chunks of one answer carry different ids: {ids}"


def test_sampling_parameters_are_accepted(vision_client):
    messages = [{"role": "user", "content": "Hello"}]
    kw = {
        "temperature": 0.8,
        "top_p": 0.9,
        "presence_penalty": 0.5,
        "frequency_penalty": 0.5,
        "seed": 1234,
        "max_tokens": 8,
        "extra_body": {"top_k": 40, "min_p": 0.05},
    }
    a = chat(vision_client, messages, **kw)
    b = chat(vision_client, messages, **kw)
    assert a.usage.completion_tokens > 0
    # The same seed gives the same sample.
    assert a.choices[0].message.content == b.choices[0].message.content


def test_image_data_uri_counts_image_tokens(vision_client):
    question = "Describe this image."
    without = chat(vision_client, [{"role": "user", "content": question}])
    with_image = chat(
        vision_client,
        [
            {
                "role": "user",
                "content": [image_part(file_data_uri(GEMMA3 / "photo.png")), text_part(question)],
            }
        ],
    )
    assert with_image.choices[0].message.content
    extra = with_image.usage.prompt_tokens - without.usage.prompt_tokens
    assert IMAGE_TOKENS <= extra <= IMAGE_TOKENS + IMAGE_FRAMING_MAX, (
        f"prompt_tokens {without.usage.prompt_tokens} -> {with_image.usage.prompt_tokens}"
    )


def test_two_images_in_one_message(vision_client):
    one = chat(
        vision_client,
        [
            {
                "role": "user",
                "content": [
                    image_part(file_data_uri(GEMMA3 / "photo.png")),
                    text_part("Compare the images."),
                ],
            }
        ],
    )
    two = chat(
        vision_client,
        [
            {
                "role": "user",
                "content": [
                    image_part(file_data_uri(GEMMA3 / "photo.png")),
                    image_part(file_data_uri(GEMMA3 / "photo2.jpg")),
                    text_part("Compare the images."),
                ],
            }
        ],
    )
    extra = two.usage.prompt_tokens - one.usage.prompt_tokens
    assert IMAGE_TOKENS <= extra <= IMAGE_TOKENS + IMAGE_FRAMING_MAX, (
        f"prompt_tokens one image {one.usage.prompt_tokens}, two {two.usage.prompt_tokens}"
    )
    assert two.choices[0].message.content


def test_follow_up_turn_does_not_encode_the_image_again(vision_server, vision_client):
    # A fresh image: no earlier test can have put it in the media cache.
    uri = data_uri(make_png(48, 40, seed=7))
    first_user = {"role": "user", "content": [image_part(uri), text_part("What is this?")]}
    before = vision_server.metrics()
    first = chat(vision_client, [first_user])
    after_first = vision_server.metrics()
    encoded = metric(after_first, "mtmd_images_encoded_total") - metric(
        before, "mtmd_images_encoded_total"
    )
    assert encoded == 1, f"first turn encoded {encoded} images"

    second = chat(
        vision_client,
        [
            first_user,
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": "Tell me more."},
        ],
    )
    after_second = vision_server.metrics()
    assert second.usage.prompt_tokens > first.usage.prompt_tokens
    assert metric(after_second, "mtmd_images_encoded_total") == metric(
        after_first, "mtmd_images_encoded_total"
    ), "the follow-up turn encoded the same image again"
    # Either the slot's KV prefix was reused or the cached embeddings were.
    details = second.usage.prompt_tokens_details
    cached = (details.cached_tokens or 0) if details else 0
    cache_hits = metric(after_second, "mtmd_media_cache_hits_total") - metric(
        after_first, "mtmd_media_cache_hits_total"
    )
    assert cached > 0 or cache_hits >= 1, f"cached_tokens={cached}, cache hits +{cache_hits}"


def test_same_image_in_two_turns_of_one_request(vision_server, vision_client):
    """The same picture twice in one conversation is encoded at most once."""
    uri = data_uri(make_png(40, 40, seed=11))
    before = metric(vision_server.metrics(), "mtmd_images_encoded_total")
    r = chat(
        vision_client,
        [
            {"role": "user", "content": [image_part(uri), text_part("What is this?")]},
            {"role": "assistant", "content": "A picture."},
            {"role": "user", "content": [image_part(uri), text_part("And this one?")]},
        ],
    )
    assert r.choices[0].message.content
    after = metric(vision_server.metrics(), "mtmd_images_encoded_total")
    assert after - before <= 1


def test_models_lists_image_modality(vision_client, vision_server):
    models = vision_client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [VISION_ALIAS]
    raw = vision_server.get("/v1/models").json()
    assert raw["object"] == "list"
    entry = raw["data"][0]
    modalities = find_modalities(entry)
    assert modalities is not None, f"no modalities in /v1/models entry: {entry}"
    assert "image" in modalities and "text" in modalities, modalities
    assert "audio" not in modalities
    assert vision_client.models.retrieve(VISION_ALIAS).id == VISION_ALIAS


def test_props(vision_server):
    r = vision_server.get("/props")
    assert r.status_code == 200, r.text
    props = r.json()
    text = json.dumps(props)
    assert "image" in text or '"vision": true' in text, (
        f"/props does not mention images: {text[:500]}"
    )
    assert "2048" in text, f"/props does not show the context size 2048: {text[:500]}"


def test_completions(vision_client):
    kw = {"model": VISION_ALIAS, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    r = vision_client.completions.create(**kw)
    assert r.object == "text_completion"
    assert isinstance(r.choices[0].text, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= 8
    streamed = "".join(
        c.choices[0].text for c in vision_client.completions.create(stream=True, **kw) if c.choices
    )
    assert streamed == r.choices[0].text


def test_metrics_count_requests_and_tokens(vision_server, vision_client):
    before = vision_server.metrics()
    r = chat(vision_client, [{"role": "user", "content": "Hello"}], max_tokens=4)
    after = vision_server.metrics()
    prompt = metric(after, "mtmd_prompt_tokens_total") - metric(before, "mtmd_prompt_tokens_total")
    generated = metric(after, "mtmd_generated_tokens_total") - metric(
        before, "mtmd_generated_tokens_total"
    )
    assert prompt == r.usage.prompt_tokens
    assert generated == r.usage.completion_tokens
    assert metric(after, "mtmd_queue_depth") == 0
    ok = metric(after, "mtmd_http_requests_total", path="/v1/chat/completions", status="200")
    ok_before = metric(
        before, "mtmd_http_requests_total", path="/v1/chat/completions", status="200"
    )
    assert ok - ok_before == 1, "mtmd_http_requests_total{path,status} did not count the request"
