"""Keys name users, requests act as them; limits answer with clear 4xx; disconnects cancel."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from companion.server.generation import FairLock, Runner, Turn
from tests.serving.conftest import RunningServer, start_server


def _key(user: str) -> str:
    from companion.server.keys import create_key

    return create_key(user, name="test")[0]


def test_keys_are_stored_hashed_and_can_be_revoked() -> None:
    from sqlalchemy import select

    from companion.server.keys import hash_key, list_keys, revoke_key, user_for_key
    from models import db

    key = _key("ada")
    assert user_for_key(key) == "ada"
    with db.connect().connect() as conn:
        stored = [r.key_hash for r in conn.execute(select(db.api_keys))]
    assert stored == [hash_key(key)] and key not in stored
    revoke_key(list_keys("ada")[0].id)
    assert user_for_key(key) is None
    assert user_for_key("ck-not-a-key") is None


def test_a_keys_last_use_is_written_once_a_minute_not_on_every_request(monkeypatch: pytest.MonkeyPatch) -> None:
    from companion.server import keys

    key = _key("ada")
    assert keys.list_keys("ada")[0].last_used_at is None
    assert keys.user_for_key(key) == "ada"
    first = keys.list_keys("ada")[0].last_used_at
    assert first is not None
    writes: list[Any] = []
    real = keys.db.write_transaction
    monkeypatch.setattr(keys.db, "write_transaction", lambda engine: writes.append(1) or real(engine))
    for _ in range(5):  # within the minute: reads only
        assert keys.user_for_key(key) == "ada"
    assert writes == [] and keys.list_keys("ada")[0].last_used_at == first
    monkeypatch.setattr(keys, "TOUCH_EVERY_S", 0.0)  # a minute later
    assert keys.user_for_key(key) == "ada"
    assert writes == [1] and keys.list_keys("ada")[0].last_used_at > first
    assert keys.user_for_key(key, touch=False) == "ada" and writes == [1]


def test_keyed_server_needs_a_valid_key(keyed_server: RunningServer) -> None:
    no_key = httpx.get(keyed_server.url + "/v1/models")
    assert no_key.status_code == 401
    assert no_key.json()["error"]["type"] == "authentication_error"
    bad = openai.OpenAI(base_url=keyed_server.base_url, api_key="ck-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    good = openai.OpenAI(base_url=keyed_server.base_url, api_key=_key("ada"), max_retries=0)
    assert "ada" in {m.id for m in good.models.list()}
    me = httpx.get(keyed_server.url + "/api/me", headers={"Authorization": f"Bearer {good.api_key}"}).json()
    assert me == {"user": "ada", "admin": False, "mode": "keys"}


def test_healthz_needs_no_key(keyed_server: RunningServer) -> None:
    assert httpx.get(keyed_server.url + "/healthz").json()["status"] == "ok"


def test_a_denied_user_gets_403(keyed_server: RunningServer, companion_home: Path) -> None:
    config = companion_home / "config.yaml"
    config.write_text(
        config.read_text().replace(
            "security:\n", "security:\n  deny:\n    - {users: [mallory], models: '*', level: read}\n"
        )
    )
    client = openai.OpenAI(base_url=keyed_server.base_url, api_key=_key("mallory"), max_retries=0)
    assert [m.id for m in client.models.list()] == []
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hi"}])
    assert info.value.body["code"] == "access_denied"


def test_a_served_card_turn_is_checked_and_audited_once(keyed_server: RunningServer) -> None:
    from models.security.manager import ModelSecurityManager

    client = openai.OpenAI(base_url=keyed_server.base_url, api_key=_key("ada-writer"), max_retries=0)
    for stream in (False, True):
        reply = client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=4, stream=stream)  # fmt: skip
        if stream:
            list(reply)
    rows = [r for r in ModelSecurityManager().audit.show(user="ada-writer") if r.level == "generate"]
    assert [r.action for r in rows] == ["stream_response", "stream_response"]


def test_local_mode_only_on_loopback() -> None:
    from companion.server import ServerSettings
    from models.errors import ConfigError

    assert ServerSettings(host="0.0.0.0").mode == "keys"
    with pytest.raises(ConfigError, match="loopback"):
        ServerSettings(host="0.0.0.0", auth="local").check()


def test_body_over_the_limit_is_413(server: RunningServer) -> None:
    big = {"model": "ada", "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    r = httpx.post(server.url + "/v1/chat/completions", json=big, timeout=30)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"


def test_open_streams_per_key_are_limited(tiny_personality: str) -> None:
    from companion.server import Limits, ServerSettings

    # the fair queue (no batching), so holding the engine's lock keeps the first stream open:
    # with batching on (the default) the lock is a no-op and the first stream could end first
    limits = Limits(max_streams_per_key=1, batch_rows=0)
    running = start_server(ServerSettings(host="127.0.0.1", port=0, limits=limits))
    try:
        state = running.app.state.companion
        model = state.runner.get_manager().load_model("personality", "ada")
        lock = state.runner.lock_for(model)
        assert isinstance(lock, FairLock)
        assert lock.acquire()  # the engine is busy: the first stream waits in the queue
        body = {"model": "ada", "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 4}
        first: dict[str, Any] = {}

        def send() -> None:
            first["response"] = httpx.post(running.url + "/v1/chat/completions", json=body, timeout=60)

        thread = threading.Thread(target=send)
        thread.start()
        deadline = time.monotonic() + 10
        while state.open_streams("local") < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = httpx.post(running.url + "/v1/chat/completions", json=body, timeout=30)
        assert second.status_code == 429
        assert second.json()["error"]["code"] == "too_many_streams"
        lock.release()
        thread.join(timeout=60)
        assert first["response"].status_code == 200
        assert first["response"].text.rstrip().endswith("data: [DONE]")
        assert state.open_streams("local") == 0
    finally:
        running.stop()


def test_fair_lock_serves_in_arrival_order() -> None:
    lock = FairLock()
    assert lock.acquire()
    order: list[int] = []

    def wait(i: int) -> None:
        lock.acquire()
        order.append(i)
        lock.release()

    threads = []
    for i in range(4):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        while lock.waiting < i + 1:
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, 3]


def test_fair_lock_serves_users_round_robin() -> None:
    """Issue 15 item 7: one user's queued requests no longer all go before another user's one."""
    lock = FairLock()
    assert lock.acquire(user="hog")
    order: list[str] = []

    def wait(who: str) -> None:
        lock.acquire(user=who)
        order.append(who)
        lock.release()

    threads = []
    for who in ["hog"] * 5 + ["ada", "ben"]:
        t = threading.Thread(target=wait, args=(who,))
        t.start()
        threads.append(t)
        while lock.waiting < len(threads):
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join(timeout=5)
    assert order[:3] == ["hog", "ada", "ben"] and order[3:] == ["hog"] * 4


def test_every_request_kind_has_a_per_user_limit(keyed_server: RunningServer) -> None:
    """Issue 15 item 7: non-streaming requests had no per-user limit at all (20 concurrent n=4
    requests of one key made another user's 8-token request wait 14 s)."""
    state = keyed_server.app.state.companion
    limit = state.settings.limits.max_requests_per_key
    hog, other = _key("hog"), _key("other")
    state.open_request("hog", limit)  # the hog's generations already in flight
    try:
        body = {"model": "ada", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for path, extra in (("/chat/completions", {}), ("/completions", {"model": "tiny", "prompt": "x"})):
            payload = {**body, **extra}
            if "prompt" in payload:
                payload.pop("messages")
            r = httpx.post(keyed_server.base_url + path, json=payload, headers={"Authorization": f"Bearer {hog}"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_requests", r.text
        r = httpx.post(
            keyed_server.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {other}"}
        )
        assert r.status_code == 200, r.text
    finally:
        state.close_request("hog", limit)
    assert state._inflight == {}


def test_a_waiter_can_give_up() -> None:
    lock = FairLock()
    lock.acquire()
    cancel = threading.Event()
    cancel.set()
    assert lock.acquire(cancel) is False
    lock.release()
    assert lock.acquire()


class _Endless:
    """A model whose stream never ends unless closed (what a disconnect must stop)."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def pieces(self) -> Iterator[str]:
        try:
            while True:
                time.sleep(0.005)
                yield "word "
        finally:
            self.closed.set()


def test_leaving_a_stream_cancels_the_generation() -> None:
    endless = _Endless()

    class Manager:
        def find(self, name: str) -> tuple[str, str]:
            return "base", name

        def load_model(self, category: str, name: str) -> Any:
            return endless

    runner = Runner(workers=2, manager=Manager())

    def job(model: Any, category: str, name: str) -> Turn:
        return Turn(model.pieces(), lambda text: {"text": text})

    async def consume() -> int:
        seen = 0
        events = runner.run("ada", "endless", job)
        async for kind, _ in events:
            seen += kind == "piece"
            if seen == 3:
                break
        await events.aclose()
        return seen

    assert asyncio.run(consume()) == 3
    assert endless.closed.wait(5), "the generation kept running after the client left"
    runner.close()


def test_users_key_commands(companion_home: Path) -> None:
    from typer.testing import CliRunner

    from companion.cli import app
    from companion.server.keys import user_for_key

    runner = CliRunner()
    created = runner.invoke(app, ["users", "key", "create", "sam", "--name", "sillytavern", "--json"])
    assert created.exit_code == 0, created.output
    data = json.loads(created.stdout)
    assert user_for_key(data["key"]) == "sam"
    listed = json.loads(runner.invoke(app, ["users", "key", "list", "--json"]).stdout)
    assert [(k["user"], k["name"]) for k in listed] == [("sam", "sillytavern")]
    assert "key" not in listed[0]
    assert runner.invoke(app, ["users", "key", "revoke", str(data["id"])]).exit_code == 0
    assert user_for_key(data["key"]) is None
    assert runner.invoke(app, ["users", "key", "revoke", "99"]).exit_code == 1


def _endless_server() -> tuple[Any, Any]:
    """A server whose only model, `endless`, streams until its consumer goes away."""
    from companion.server import ServerSettings, create_app
    from tests.serving.conftest import serve_app

    endless = _Endless()

    class Model:
        last_stats = None

        def stream_chat(self, messages: Any, max_length: Any = None, **kw: Any) -> Iterator[str]:
            return endless.pieces()

    class Manager:
        def find(self, name: str) -> tuple[str, str]:
            return "base", name

        def load_model(self, category: str, name: str) -> Any:
            return Model()

    return endless, serve_app(create_app(ServerSettings(host="127.0.0.1", port=0), manager=Manager()))


def test_a_client_that_disconnects_cancels_its_stream() -> None:
    endless, running = _endless_server()
    try:
        body = {"model": "endless", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        with httpx.stream("POST", running.url + "/v1/chat/completions", json=body, timeout=30) as r:
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
        assert any('"content":"word "' in line for line in got)
        assert endless.closed.wait(10), "the generation kept running after the client left"
        state = running.app.state.companion
        deadline = time.monotonic() + 10
        while state.open_streams("local") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state.open_streams("local") == 0
    finally:
        running.stop()


def test_a_client_that_gives_up_on_a_plain_request_cancels_it() -> None:
    endless, running = _endless_server()
    try:
        body = {"model": "endless", "messages": [{"role": "user", "content": "Hi"}]}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(running.url + "/v1/chat/completions", json=body, timeout=0.5)
        assert endless.closed.wait(10), "the generation kept running after the client left"
    finally:
        running.stop()


def test_a_slow_database_read_does_not_hold_the_engine(keyed_server: RunningServer, monkeypatch) -> None:
    """Issue 15 item 11: a chat's own reads (preferences, memory) ran under the engine's lock, so
    one user's slow read (e.g. behind another's preference writes) stalled every other user."""
    import companion.server.turns as turns

    released = threading.Event()
    real = turns.personal_note

    def slow_note(user: str, message: str) -> Any:
        if user == "slowpoke":
            released.wait(20)
        return real(user, message)

    monkeypatch.setattr(turns, "personal_note", slow_note)
    slow, quick = _key("slowpoke"), _key("quick")
    body = {"model": "ada", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    done: list[int] = []

    def slow_request() -> None:
        r = httpx.post(
            keyed_server.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {slow}"},
            timeout=60,
        )
        done.append(r.status_code)

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.5)  # the slow request is now inside its read
    r = httpx.post(
        keyed_server.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {quick}"}, timeout=8
    )
    assert r.status_code == 200, r.text
    assert not done  # the slow one is still reading: the quick one did not wait for it
    released.set()
    t.join(30)
    assert done == [200]


def test_writes_have_a_per_user_rate(tiny_personality: str) -> None:
    """One client writing as fast as it is answered took the server's time from everyone's
    chats: writes that do not generate are limited per user (a token bucket of twice the rate)."""
    from companion.server import Limits, ServerSettings

    # a slow rate, so that however slow this machine is, the bucket cannot refill mid-test
    running = start_server(ServerSettings(host="127.0.0.1", port=0, limits=Limits(writes_per_second=0.5)))
    try:
        url = running.url + "/api/me/memory"
        assert httpx.post(url, json={"text": "Fact 0"}).status_code == 200  # the bucket holds one
        over = httpx.post(url, json={"text": "one more"})
        assert over.status_code == 429 and over.headers["Retry-After"] == "1"
        assert over.json()["error"]["code"] == "too_many_writes" and "0.5 a second" in over.json()["error"]["message"]
        assert httpx.get(running.url + "/api/me/memory").status_code == 200  # reads are not writes
        body = {"model": "ada", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert httpx.post(running.base_url + "/chat/completions", json=body, timeout=60).status_code == 200
        time.sleep(2.1)  # the bucket refills at the rate
        assert httpx.post(url, json={"text": "later"}).status_code == 200
        facts = [f["text"] for f in httpx.get(running.url + "/api/me/memory").json()["facts"]]
        assert "one more" not in facts and "later" in facts  # a refused write changed nothing
    finally:
        running.stop()


def test_a_turn_on_the_fair_queue_sees_who_waits_behind_it() -> None:
    """`QUEUED` for the turn the fair lock lets through: a small model's stream then decodes one
    sample instead of taking the engine for its best of N (`LocalEngine.hold_if_free`)."""
    from models.engines.base import QUEUED

    class Model:
        engine = object()  # an engine that does not batch: the fair queue

    class Manager:
        def find(self, name: str) -> tuple[str, str]:
            return "base", name

        def load_model(self, category: str, name: str) -> Any:
            return Model

    runner = Runner(workers=4, manager=Manager(), batch_rows=0)
    lock = runner.lock_for(Model)
    assert isinstance(lock, FairLock) and lock.acquire()  # the engine is busy: turns queue
    seen: dict[str, int] = {}

    def job(model: Any, category: str, name: str) -> Turn:
        def pieces() -> Iterator[str]:
            queued = QUEUED.get()
            seen[threading.current_thread().name] = queued() if queued is not None else -1
            yield "x"

        return Turn(pieces(), lambda text: {"text": text})

    threads = []
    for n in range(2):
        t = threading.Thread(target=runner._work, args=(f"u{n}", "m", job, lambda _e: None, threading.Event()),
                             name=f"turn{n}")  # fmt: skip
        t.start()
        threads.append(t)
        deadline = time.monotonic() + 10
        while lock.waiting < n + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    lock.release()
    for t in threads:
        t.join(10)
    assert seen == {"turn0": 1, "turn1": 0}  # the first had the second behind it; the last had none
    assert QUEUED.get() is None
    runner.close()
