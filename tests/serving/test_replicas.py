"""Two `companion serve` processes on one database behave as one service (issue 21): a user's
requests alternate between them and the character's state with that user carries over, as do
chats, memory and preferences. Here both servers share a home's SQLite database; CI runs the
same against PostgreSQL through COMPANION_TEST_DATABASE_URL where it is set."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.serving.conftest import RunningServer, start_server


@pytest.fixture
def replicas(tiny_personality: str) -> Iterator[tuple[RunningServer, RunningServer]]:
    from companion.server import ServerSettings

    a = start_server(ServerSettings(host="127.0.0.1", port=0))
    b = start_server(ServerSettings(host="127.0.0.1", port=0))
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
