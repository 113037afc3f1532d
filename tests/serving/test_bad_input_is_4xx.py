"""Issue 15 item 6: input a client can send is a 4xx in OpenAI's error shape, never a 500.

Before the fix each of these was a 500: `logit_bias {"²": 5}` (str.isdigit takes it, int() does
not), `{"999999999": 5}` (an EngineError, mapped to 500), `model: "user_prefs"` (a personalization
model has no chat), and a lone surrogate in a message or a prompt (no tokenizer can encode it).
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.serving.conftest import RunningServer

CHAT = {"model": "ada", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def _post(server: RunningServer, path: str, raw: str) -> httpx.Response:
    return httpx.post(server.url + path, content=raw.encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    "change",
    [
        {"logit_bias": {"²": 5}},
        {"logit_bias": {"999999999": 5}},
        {"logit_bias": {"-1": 5}},
        {"model": "user_prefs"},
        {"model": "tiny", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]},
    ],
)
def test_bad_chat_fields_are_400(server: RunningServer, change: dict) -> None:
    body = {**CHAT, **change}
    r = _post(server, "/v1/chat/completions", json.dumps(body))
    if change.get("model") == "tiny":
        assert r.status_code == 200, r.text  # a base model with a system message is fine (control)
        return
    assert 400 <= r.status_code < 500, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["type"] == "invalid_request_error"


def test_a_lone_surrogate_is_400_in_chat_and_completions(server: RunningServer) -> None:
    chat = json.dumps(CHAT).replace('"hi"', '"hi \\ud800 there"')
    r = _post(server, "/v1/chat/completions", chat)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "messages.0.content"
    comp = '{"model": "tiny", "prompt": "\\ud800", "max_tokens": 2}'
    r = _post(server, "/v1/completions", comp)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "prompt"


def test_completions_on_a_personalization_model_is_400(server: RunningServer) -> None:
    r = _post(server, "/v1/completions", '{"model": "user_prefs", "prompt": "x", "max_tokens": 2}')
    assert 400 <= r.status_code < 500, r.text


def test_generation_input_errors_are_value_errors() -> None:
    from companion.server.errors import status_of
    from models.errors import EngineError, GenerationInputError

    assert status_of(GenerationInputError("token id 9 is outside the vocabulary"))[0] == 400
    assert status_of(EngineError("the server at localhost:11434 did not answer"))[0] == 500
