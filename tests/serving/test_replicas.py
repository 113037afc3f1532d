"""Two `companion serve` processes on one database behave as one service (issue 21): a user's
requests alternate between them and the character's state with that user carries over, as do
chats, memory and preferences. Each server has its own model manager (its own loaded models and
their in-memory sessions), so what carries over goes through the database: the home's SQLite
file here, a fresh PostgreSQL schema where COMPANION_TEST_DATABASE_URL is set (CI)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.lifecycle.conftest import database  # noqa: F401 - the PostgreSQL schema in CI, else SQLite
from tests.serving.conftest import RunningServer, serve_app


@pytest.fixture
def replicas(tiny_personality: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    from companion.server import ServerSettings, create_app
    from models.context import current
    from models.model_manager import ModelManager

    def replica() -> RunningServer:  # like a second process: its own manager and loaded models
        return serve_app(create_app(ServerSettings(host="127.0.0.1", port=0), manager=ModelManager(context=current())))

    a, b = replica(), replica()
    yield a, b
    a.stop()
    b.stop()


def _say(server: RunningServer, text: str, emotion: str | None = None) -> dict:
    body = {"model": "ada", "messages": [{"role": "user", "content": text}], "max_tokens": 4, "seed": 1}
    if emotion:
        body["companion"] = {"emotion": emotion}
    r = httpx.post(server.base_url + "/chat/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def _state(server: RunningServer) -> dict:
    return httpx.get(server.url + "/api/personalities/ada/state", timeout=30).json()


def test_one_users_requests_alternate_between_two_replicas(replicas) -> None:
    a, b = replicas
    assert _state(a)["turn"] == 0 == _state(b)["turn"]
    _say(a, "I am so sad and lonely tonight.")
    after_a = _state(b)  # the other replica sees the turn and the mood it left
    assert after_a["turn"] == 1 and after_a["values"] == _state(a)["values"]
    _say(b, "Thank you, that makes me happy!")
    assert _state(a)["turn"] == 2 and _state(a)["values"] == _state(b)["values"]
    # memory, preferences and chats are in the database already: one replica writes, the other reads
    httpx.post(a.url + "/api/me/memory", json={"text": "Has a cat called Ink"}, timeout=30)
    assert [f["text"] for f in httpx.get(b.url + "/api/me/memory", timeout=30).json()["facts"]] == [
        "Has a cat called Ink"
    ]
    chat = httpx.post(a.url + "/api/chats", json={"model": "ada"}, timeout=30).json()
    httpx.post(f"{b.url}/api/chats/{chat['id']}/messages", json={"content": "Hello"}, timeout=60)
    assert len(httpx.get(f"{a.url}/api/chats/{chat['id']}", timeout=30).json()["messages"]) == 3
