"""Audio through the server on the tiny random-weight Qwen2-Audio fixture: `input_audio` chat
parts (plain and streamed), `/v1/audio/transcriptions` (json, text, streamed), the audio
modality, the media cache, and the documented 400s for media of a kind the mmproj does not
take. At temperature 0 the answers equal the fixture's library-level greedy reference
(reference.json, computed by llama.cpp's libmtmd on the very prompt the chat template renders)."""

from __future__ import annotations

import json
import subprocess

import openai
import pytest
import requests

from conftest import AUDIO_ALIAS, VISION_ALIAS
from helpers import (
    GEMMA3,
    QWEN2AUDIO,
    ROOT,
    Server,
    assert_error_shape,
    audio_part,
    file_data_uri,
    find_modalities,
    image_part,
    make_wav,
    metric,
    mtmd_bin,
    serve_flags,
    text_part,
)

SYSTEM = "You are a helpful assistant."
QUESTION = "What do you hear in this audio clip?"
REFERENCE = json.loads((QWEN2AUDIO / "reference.json").read_text())
# Cases whose 16 greedy steps all have a clear top-2 margin (>= 5e-2) in the reference.
CLEAR_CASES = ["wav16k", "flac16k"]


def question(path, system: str = SYSTEM, text: str = QUESTION) -> list[dict]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": [audio_part(path), text_part(text)]},
    ]


def expect_400(err: openai.APIStatusError, code: str) -> dict:
    assert err.status_code == 400, f"expected 400, got {err.status_code}: {err.body}"
    body = err.response.json()
    e = assert_error_shape(body, 400)
    assert e["code"] == code, e
    return e


def test_models_and_props_list_the_audio_modality(audio_server, audio_client):
    models = audio_client.models.list()
    assert models.data[0].id == AUDIO_ALIAS
    assert find_modalities(models.model_dump()) == ["text", "audio"]
    props = audio_server.get("/props").json()
    assert props["modalities"] == {"vision": False, "audio": True}


@pytest.mark.parametrize("case", CLEAR_CASES)
def test_input_audio_chat_equals_the_library_reference(audio_client, case):
    ref = REFERENCE["cases"][case]
    n = len(ref["greedy_ids"])
    messages = question(QWEN2AUDIO / ref["input_file"])
    r = audio_client.chat.completions.create(
        model=AUDIO_ALIAS, messages=messages, temperature=0, max_tokens=n
    )
    got = r.choices[0].message.content
    assert got == ref["greedy_text"], f"{case}: server {got!r}\n reference {ref['greedy_text']!r}"
    # Audio tokens count in the prompt, like image tokens.
    assert r.usage.prompt_tokens == ref["n_prompt_tokens"], r.usage
    assert r.usage.completion_tokens == n
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in audio_client.chat.completions.create(
            model=AUDIO_ALIAS, messages=messages, temperature=0, max_tokens=n, stream=True
        )
        if c.choices
    )
    assert streamed == got


def test_server_is_deterministic_on_the_other_clips(audio_client):
    for name in ["speech_a_44k1_stereo.wav", "quiet_a_16k_mono.wav", "short_0p1s_16k.wav"]:
        messages = question(QWEN2AUDIO / name)
        answers = {
            audio_client.chat.completions.create(
                model=AUDIO_ALIAS, messages=messages, temperature=0, max_tokens=12
            )
            .choices[0]
            .message.content
            for _ in range(2)
        }
        assert len(answers) == 1, (name, answers)


def test_same_audio_twice_is_encoded_once(audio_server, audio_client):
    clip = QWEN2AUDIO / "speech_a_16k_mono.wav"
    before = audio_server.metrics()
    audio_client.chat.completions.create(
        model=AUDIO_ALIAS, messages=question(clip, "Be brief."), temperature=0, max_tokens=4
    )
    first = audio_server.metrics()
    # A new clip costs at most one encode (none when an earlier test cached it).
    encoded = metric(first, "mtmd_audio_encoded_total") - metric(before, "mtmd_audio_encoded_total")
    assert encoded <= 1, encoded
    # The same clip in another conversation (a different start): from the media cache.
    audio_client.chat.completions.create(
        model=AUDIO_ALIAS, messages=question(clip, "Be terse."), temperature=0, max_tokens=4
    )
    second = audio_server.metrics()
    assert metric(second, "mtmd_audio_encoded_total") == metric(first, "mtmd_audio_encoded_total")
    assert metric(second, "mtmd_media_cache_hits_total") > metric(
        first, "mtmd_media_cache_hits_total"
    )
    assert metric(second, "mtmd_images_encoded_total") == 0


def transcribe(client, path, **kw):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model=AUDIO_ALIAS, file=f, **kw)


def test_transcriptions_json_text_and_stream_agree(audio_client):
    clip = QWEN2AUDIO / "speech_a_16k_mono.wav"
    limit = {"max_tokens": 12}
    as_json = transcribe(audio_client, clip, response_format="json", extra_body=limit)
    assert isinstance(as_json.text, str) and as_json.text, as_json
    assert as_json.usage.type == "tokens" and as_json.usage.output_tokens <= 12, as_json.usage
    as_text = transcribe(audio_client, clip, response_format="text", extra_body=limit)
    assert as_text == as_json.text
    deltas, done = [], None
    for event in transcribe(audio_client, clip, stream=True, extra_body=limit):
        if event.type == "transcript.text.delta":
            assert done is None, "a delta after the done event"
            deltas.append(event.delta)
        elif event.type == "transcript.text.done":
            done = event
    assert done is not None, "no transcript.text.done event"
    assert "".join(deltas) == done.text == as_json.text
    assert done.usage.input_tokens == as_json.usage.input_tokens
    # FLAC holds the same samples: the same transcript. The transcription is the chat of one
    # user message (the audio, then the instruction), greedy.
    assert transcribe(audio_client, clip.with_suffix(".flac"), extra_body=limit).text == as_json.text
    chat = audio_client.chat.completions.create(
        model=AUDIO_ALIAS,
        messages=[{"role": "user", "content": [audio_part(clip), text_part("Transcribe this audio.")]}],
        temperature=0,
        max_tokens=12,
    )
    assert chat.choices[0].message.content == as_json.text
    prompted = transcribe(audio_client, clip, prompt=QUESTION, extra_body=limit)
    assert isinstance(prompted.text, str)


def test_bad_audio_is_400_naming_the_part(audio_client):
    for data, fmt in [("@@not base64@@", "wav"), ("bm90IGF1ZGlvIGF0IGFsbA==", "wav")]:
        part = {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}
        with pytest.raises(openai.BadRequestError) as e:
            audio_client.chat.completions.create(
                model=AUDIO_ALIAS,
                messages=[{"role": "user", "content": [text_part("hi"), part]}],
                max_tokens=4,
            )
        err = expect_400(e.value, "invalid_audio")
        assert err["message"].startswith("messages[0].content[1]: "), err
    with pytest.raises(openai.BadRequestError) as e:
        audio_client.audio.transcriptions.create(
            model=AUDIO_ALIAS, file=("x.wav", b"not audio at all", "audio/wav")
        )
    assert expect_400(e.value, "invalid_audio")["message"].startswith("file: ")


def test_image_and_audio_in_one_message_is_the_documented_400(audio_client):
    """No fixture's mmproj takes both kinds: the image is refused, naming its part."""
    content = [
        audio_part(QWEN2AUDIO / "short_0p1s_16k.wav"),
        image_part(file_data_uri(GEMMA3 / "tiny.png")),
        text_part("Compare them."),
    ]
    with pytest.raises(openai.BadRequestError) as e:
        audio_client.chat.completions.create(
            model=AUDIO_ALIAS, messages=[{"role": "user", "content": content}], max_tokens=4
        )
    err = expect_400(e.value, "no_vision")
    assert err["message"].startswith("messages[0].content[1]: this model takes no image input")


def test_audio_to_a_vision_model_is_400(vision_client):
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=[
                {"role": "user", "content": [audio_part(QWEN2AUDIO / "short_0p1s_16k.wav")]}
            ],
            max_tokens=4,
        )
    err = expect_400(e.value, "no_audio")
    assert "vision encoder, not an audio one" in err["message"], err
    with pytest.raises(openai.BadRequestError) as e:
        with open(QWEN2AUDIO / "short_0p1s_16k.wav", "rb") as f:
            vision_client.audio.transcriptions.create(model=VISION_ALIAS, file=f)
    expect_400(e.value, "no_audio")


def test_audio_longer_than_the_limit_is_400(audio_server):
    """`--max-audio-seconds` when the binary has it (a 1 s limit against a 2.5 s clip), else the
    default limit of 600 s against a generated 601 s clip."""
    if "--max-audio-seconds" in serve_flags():
        server = Server(
            "audio-limit",
            [
                "-m", str(QWEN2AUDIO / "model.gguf"), "--mmproj", str(QWEN2AUDIO / "mmproj.gguf"),
                "--parallel", "1", "-c", "1024", "--max-audio-seconds", "1",
                "--alias", AUDIO_ALIAS,
            ],
        )  # fmt: skip
        try:
            server.wait_ready()
            clip, limit = (QWEN2AUDIO / "speech_a_16k_mono.wav").read_bytes(), "1.00 s"
            check_too_long(server, clip, limit)
        finally:
            server.stop()
    else:
        check_too_long(audio_server, make_wav(601.0), "600.00 s")


def check_too_long(server: Server, clip: bytes, limit: str) -> None:
    r = server.post(
        "/v1/audio/transcriptions",
        files={"file": ("long.wav", clip, "audio/wav")},
        data={"model": AUDIO_ALIAS},
    )
    assert r.status_code == 400, r.text
    err = assert_error_shape(r.json(), 400)
    assert err["code"] == "audio_too_long", err
    assert err["message"].startswith("file: the audio is ") and f"limit of {limit}" in err[
        "message"
    ], err


def test_transcription_equals_mtmd_run_audio():
    """Server vs `mtmd run --audio` once the CLI has the flag (skipped until then)."""
    help_text = subprocess.run(
        [str(mtmd_bin()), "run", "--help"], capture_output=True, text=True, check=False
    ).stdout
    if "--audio" not in help_text:
        pytest.skip("mtmd run has no --audio flag yet")
    clip = QWEN2AUDIO / "speech_a_16k_mono.wav"
    out = subprocess.run(
        [
            str(mtmd_bin()), "run", "-m", str(QWEN2AUDIO / "model.gguf"),
            "--mmproj", str(QWEN2AUDIO / "mmproj.gguf"), "--audio", str(clip),
            "-p", QUESTION, "--temp", "0", "-n", "16", "-c", "2048", "--kv-type", "f32", "--json",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    want = json.loads(out.stdout.strip().splitlines()[-1])
    server = Server(
        "audio-vs-run",
        [
            "-m", str(QWEN2AUDIO / "model.gguf"), "--mmproj", str(QWEN2AUDIO / "mmproj.gguf"),
            "--parallel", "1", "-c", "2048", "--kv-type", "f32",
        ],
    )  # fmt: skip
    try:
        server.wait_ready()
        r = server.client().chat.completions.create(
            model="model",
            messages=[{"role": "user", "content": [audio_part(clip), text_part(QUESTION)]}],
            temperature=0,
            max_tokens=16,
        )
    finally:
        server.stop()
    assert r.usage.prompt_tokens == want["prompt_tokens"], (r.usage, want)
    assert r.choices[0].message.content == want["text"]


def test_transcription_wire_format(audio_server):
    """The raw SSE stream: only `data:` lines, deltas then one done event, no `[DONE]`."""
    clip = (QWEN2AUDIO / "short_0p1s_16k.wav").read_bytes()
    r = audio_server.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.wav", clip, "audio/wav")},
        data={"stream": "true", "max_tokens": "6"},
        stream=True,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[len("data:") :])
        for line in r.iter_lines(decode_unicode=True)
        if line and line.startswith("data:")
    ]
    assert events and events[-1]["type"] == "transcript.text.done", events
    assert all(e["type"] == "transcript.text.delta" for e in events[:-1]), events
    assert "".join(e["delta"] for e in events[:-1]) == events[-1]["text"]
    plain = requests.post(
        audio_server.url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", clip, "audio/wav")},
        data={"response_format": "text", "max_tokens": "6"},
        timeout=120,
    )
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("text/plain")
    assert plain.text == events[-1]["text"]
