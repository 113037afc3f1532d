"""Tools through the server with the official client: a forced call, its result sent back as a
`tool` message, streaming deltas; models without a tool format answer 400."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.serving.conftest import GRANT_ALL, RunningServer, start_server
from tests.test_tools import ASK, CLOCK, TOOL_TEMPLATE, WEATHER


@pytest.fixture
def tool_server(tiny_model_dir: Path, tmp_path: Path, user_config: Any) -> Iterator[RunningServer]:
    from companion.server import ServerSettings

    folder = tmp_path / "tools-tiny"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "manifest.json").unlink(missing_ok=True)
    (folder / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    user_config(
        GRANT_ALL + "models:\n  base:\n"
        f"    tools-tiny: {{type: transformer, path: '{folder}', parameters: {{max_length: 200}}}}\n"
        "    tiny: {type: transformer, path: '{tiny}'}\n"
    )
    running = start_server(ServerSettings(host="127.0.0.1", port=0))
    yield running
    running.stop()


def test_a_tool_call_round_trip_with_the_official_client(tool_server: RunningServer) -> None:
    client = openai.OpenAI(base_url=tool_server.base_url, api_key="none")
    r = client.chat.completions.create(
        model="tools-tiny", messages=ASK, tools=[WEATHER, CLOCK], seed=1,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )  # fmt: skip
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    follow = [*ASK, choice.message.model_dump(exclude_none=True),
              {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "grey", "wind": 30}'}]  # fmt: skip
    r = client.chat.completions.create(model="tools-tiny", messages=follow, tools=[WEATHER], tool_choice="none", seed=1)
    assert r.choices[0].finish_reason in ("stop", "length") and r.choices[0].message.tool_calls is None
    stream = client.chat.completions.create(
        model="tools-tiny", messages=ASK, tools=[WEATHER], tool_choice="required", seed=2, stream=True
    )
    deltas = [c.choices[0] for c in stream if c.choices]
    calls = [tc for d in deltas for tc in (d.delta.tool_calls or [])]
    assert calls and calls[0].function.name == "get_weather" and deltas[-1].finish_reason == "tool_calls"
    json.loads(calls[0].function.arguments)


def test_tools_are_refused_where_they_cannot_work(tool_server: RunningServer) -> None:
    url = tool_server.base_url + "/chat/completions"
    body = {"model": "tiny", "messages": ASK, "tools": [WEATHER], "max_tokens": 4}
    r = httpx.post(url, json=body, timeout=60)
    assert r.status_code == 400 and "no tool format" in r.json()["error"]["message"]
    r = httpx.post(url, json={**body, "model": "tools-tiny", "tool_choice": "sometimes"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tool_choice"
    r = httpx.post(url, json={**body, "model": "tools-tiny", "functions": [{"name": "f"}]}, timeout=60)
    assert r.status_code == 400 and "send tools" in r.json()["error"]["message"]
    tool_message = {"role": "tool", "content": "{}"}
    r = httpx.post(url, json={**body, "model": "tools-tiny", "messages": [*ASK, tool_message]}, timeout=60)
    assert r.status_code == 400 and "tool_call_id" in r.json()["error"]["message"]
