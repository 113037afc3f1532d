"""response_format through the server with the official client: JSON 20/20, streamed too."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

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
