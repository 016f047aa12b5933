"""Every error case of the issue answers with its status and OpenAI's error object, and
none of them stops the server from answering the next request."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from conftest import VISION_ALIAS, VISION_MAX_BODY_MB
from helpers import (
    API_KEY,
    GEMMA3,
    assert_error_shape,
    file_data_uri,
    find_modalities,
    image_part,
    raw_post,
    text_part,
)


def image_message(uri: str) -> list[dict]:
    return [{"role": "user", "content": [image_part(uri), text_part("What is this?")]}]


def expect_status(err: openai.APIStatusError, status: int) -> dict:
    assert err.status_code == status, f"expected {status}, got {err.status_code}: {err.body}"
    body = err.response.json()
    return assert_error_shape(body, status)


def test_malformed_json_is_400(vision_server):
    status, body = raw_post(vision_server, "/v1/chat/completions", b'{"model": "x", "messages": [')
    assert status == 400, body
    assert_error_shape(body, status)


def test_missing_messages_is_400(vision_server):
    status, body = raw_post(
        vision_server, "/v1/chat/completions", json.dumps({"model": VISION_ALIAS}).encode()
    )
    assert status == 400, body
    assert_error_shape(body, status)


def test_bad_base64_is_400(vision_client):
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=image_message("data:image/png;base64,@@@not*base64@@@"),
            max_tokens=4,
        )
    expect_status(e.value, 400)


def test_corrupt_image_is_400(vision_client):
    garbage = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50).decode()
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=image_message(f"data:image/png;base64,{garbage}"),
            max_tokens=4,
        )
    expect_status(e.value, 400)


def test_remote_image_url_refused_by_default(vision_client):
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=image_message("http://127.0.0.1:9/cat.png"),
            max_tokens=4,
        )
    expect_status(e.value, 400)


def test_audio_input_is_400(vision_client):
    wav = base64.b64encode(b"RIFF\x24\x00\x00\x00WAVEfmt ").decode()
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}},
                        text_part("What do you hear?"),
                    ],
                }
            ],
            max_tokens=4,
        )
    err = expect_status(e.value, 400)
    assert "audio" in err["message"].lower(), err


def test_body_over_limit_is_413(vision_server):
    big = "A" * (VISION_MAX_BODY_MB * 1024 * 1024 + 200_000)
    body = json.dumps(
        {
            "model": VISION_ALIAS,
            "messages": image_message(f"data:image/png;base64,{big}"),
            "max_tokens": 4,
        }
    ).encode()
    status, resp = raw_post(vision_server, "/v1/chat/completions", body)
    assert status == 413, resp
    assert_error_shape(resp, status)


def test_unknown_model_is_404(vision_client):
    with pytest.raises(openai.NotFoundError) as e:
        vision_client.chat.completions.create(
            model="no-such-model",
            messages=[{"role": "user", "content": "Hello"}],
            max_tokens=4,
        )
    expect_status(e.value, 404)


def test_missing_api_key_is_401(vision_server):
    status, body = raw_post(
        vision_server,
        "/v1/chat/completions",
        json.dumps(
            {
                "model": VISION_ALIAS,
                "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 2,
            }
        ).encode(),
        headers={"Authorization": None},
    )
    assert status == 401, body
    assert_error_shape(body, status)


def test_health_needs_no_api_key(vision_server):
    r = vision_server.get("/health", headers={"Authorization": None})
    assert r.status_code == 200, r.text


def test_wrong_api_key_is_401(vision_server):
    client = vision_server.client(api_key="not-" + API_KEY)
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(
            model=VISION_ALIAS, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    expect_status(e.value, 401)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_prompt_longer_than_context_is_400(vision_client):
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=[{"role": "user", "content": "hello " * 5000}],
            max_tokens=4,
        )
    expect_status(e.value, 400)


def test_conversation_the_template_refuses_is_400(vision_client):
    # Gemma 3's template insists on alternating user/assistant turns.
    with pytest.raises(openai.BadRequestError) as e:
        vision_client.chat.completions.create(
            model=VISION_ALIAS,
            messages=[
                {"role": "user", "content": "one"},
                {"role": "user", "content": "two"},
            ],
            max_tokens=4,
        )
    err = expect_status(e.value, 400)
    assert "alternate" in err["message"], err


def test_image_without_mmproj_is_400_naming_mmproj(text_server):
    client = text_server.client()
    model = client.models.list().data[0].id
    entry = text_server.get("/v1/models").json()["data"][0]
    modalities = find_modalities(entry)
    assert modalities is not None and "image" not in modalities, entry
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=model,
            messages=image_message(file_data_uri(GEMMA3 / "photo.png")),
            max_tokens=4,
        )
    err = expect_status(e.value, 400)
    assert "--mmproj" in err["message"], err
    # Text still works on that server.
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
    )
    assert r.usage.completion_tokens > 0


WEIRD_BODIES = {
    "messages not a list": {"messages": "hi"},
    "empty messages": {"messages": []},
    "content a number": {"messages": [{"role": "user", "content": 5}]},
    "unknown role": {"messages": [{"role": "wizard", "content": "hi"}]},
    "unknown part type": {
        "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {}}]}]
    },
    "image_url without url": {
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    },
    "temperature a string": {"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
    "max_tokens a string": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"},
    "stop a number": {"messages": [{"role": "user", "content": "hi"}], "stop": 7},
    "body an array": [1, 2, 3],
}


@pytest.mark.parametrize("case", list(WEIRD_BODIES))
def test_invalid_requests_are_400(vision_server, case):
    body = WEIRD_BODIES[case]
    if isinstance(body, dict):
        body = {"model": VISION_ALIAS, "max_tokens": 4, **body}
    status, resp = raw_post(vision_server, "/v1/chat/completions", json.dumps(body).encode())
    assert status == 400, f"{case}: {status} {resp!r}"
    assert_error_shape(resp, status)


def test_server_survives_the_errors(vision_server, vision_client):
    # Runs after the error tests of this module (pytest keeps file order).
    assert vision_server.proc.poll() is None, "the server died"
    assert vision_server.get("/health").status_code == 200
    r = vision_client.chat.completions.create(
        model=VISION_ALIAS,
        messages=[{"role": "user", "content": "Hello"}],
        max_tokens=4,
        temperature=0,
    )
    assert r.usage.completion_tokens > 0
