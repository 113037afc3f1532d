"""response_format through the server with the official client: JSON 20/20, streamed too."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from tests.test_structured import ASK, KEEPER

SCHEMA = {"type": "json_schema", "json_schema": {"name": "keeper", "schema": KEEPER, "strict": True}}


def test_the_official_client_gets_json_20_of_20(client: Any) -> None:
    for seed in range(20):
        for fmt in ({"type": "json_object"}, SCHEMA):
            r = client.chat.completions.create(
                model="companion-chat", messages=ASK, seed=seed, max_tokens=120, response_format=fmt
            )
            value = json.loads(r.choices[0].message.content)
            assert isinstance(value, dict) and r.choices[0].finish_reason == "stop"
            if fmt is SCHEMA:
                jsonschema.validate(value, KEEPER)


def test_a_streamed_answer_is_json_too_and_a_personality_keeps_it_intact(client: Any) -> None:
    stream = client.chat.completions.create(
        model="companion-chat", messages=ASK, seed=3, max_tokens=120, response_format=SCHEMA, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    jsonschema.validate(json.loads(text), KEEPER)
    r = client.chat.completions.create(
        model="ada", messages=[{"role": "user", "content": "Hi"}], seed=1, max_tokens=60,
        response_format={"type": "json_object"},
    )  # fmt: skip
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_logprobs_in_chat_and_completions_streamed_or_not(client: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = client.chat.completions.create(
        model="tiny", messages=messages, seed=2, max_tokens=6, logprobs=True, top_logprobs=2
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens and all(len(c.top_logprobs) == 2 for c in content)
    assert "".join(c.token for c in content) == r.choices[0].message.content
    stream = client.chat.completions.create(
        model="tiny", messages=messages, seed=2, max_tokens=6, logprobs=True, stream=True
    )
    streamed = [c.choices[0].logprobs for c in stream if c.choices and c.choices[0].logprobs]
    # The same tokens; the logprobs agree to float32 rounding, not bit for bit: the second
    # request finds the prompt in the scheduler's prefix cache and computes only its last token,
    # a matmul of another shape than the first request's whole-prompt prefill.
    assert [t.token for t in streamed[-1].content] == [t.token for t in content]
    assert [t.logprob for t in streamed[-1].content] == pytest.approx([t.logprob for t in content], abs=1e-5)
    done = client.completions.create(model="tiny", prompt="Once upon", max_tokens=5, seed=1, logprobs=2)
    lp = done.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == done.usage.completion_tokens
    assert lp.text_offset[0] == 0 and all(len(t) == 2 for t in lp.top_logprobs)


def test_logprobs_refused_where_they_cannot_be_true(server: Any) -> None:
    import httpx

    url = server.base_url + "/chat/completions"
    bare = {"model": "ada", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "logprobs": True}
    r = httpx.post(url, json=bare, timeout=60)  # the card prompt picks among answers
    assert r.status_code == 400 and "companion" in r.json()["error"]["message"]
    r = httpx.post(url, json={**bare, "model": "tiny", "top_logprobs": 30}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "top_logprobs"
    r = httpx.post(url, json={**bare, "model": "tiny", "logprobs": False, "top_logprobs": 2}, timeout=60)
    assert r.status_code == 400 and "needs logprobs" in r.json()["error"]["message"]
