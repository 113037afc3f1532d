"""Continuous batching in the server (issue 21): with `batch_rows` on, concurrent streams share
the fast engine's scheduler, every stream ends, and a full queue is a 429, never a 5xx."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.serving.conftest import RunningServer, start_server


@pytest.fixture
def batching_server(tiny_personality: str) -> Iterator[RunningServer]:
    from companion.server import ServerSettings
    from companion.server.settings import Limits

    running = start_server(ServerSettings(host="127.0.0.1", port=0, limits=Limits(batch_rows=8)))
    yield running
    running.stop()


def _stream(url: str, i: int, out: dict[int, str]) -> None:
    body = {"model": "ada", "messages": [{"role": "user", "content": f"Hello {i}"}], "stream": True,
            "max_tokens": 12, "seed": i, "user": f"writer-{i}"}  # fmt: skip
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=60) as r:
        out[i] = r.read().decode() if r.status_code != 200 else "".join(r.iter_text())


def _all_end(url: str, n: int) -> None:
    """`n` streams at once; each ends with `[DONE]`."""
    out: dict[int, str] = {}
    threads = [threading.Thread(target=_stream, args=(url, i, out)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(out) == n and all(text.rstrip().endswith("data: [DONE]") for text in out.values()), out


def test_concurrent_streams_share_the_scheduler_and_all_end(batching_server: RunningServer) -> None:
    _all_end(batching_server.url, 6)
    runner = batching_server.app.state.companion.runner
    from models.gate import inside_checked_call

    with inside_checked_call():
        engine = runner.get_manager().load_model("personality", "ada").base.engine
    assert engine.scheduler is not None and engine.scheduler.steps > 0 and engine.scheduler.running == 0


def test_a_full_queue_is_a_429_with_retry_after(batching_server: RunningServer, monkeypatch) -> None:
    from models.errors import QueueFullError

    def full(*_a, **_k):
        raise QueueFullError("256 requests are already waiting for this model")

    from models.engines.llama.engine import FastEngine
    from models.engines.llama.scheduler import Scheduler

    monkeypatch.setattr(Scheduler, "submit", full)
    monkeypatch.setattr(FastEngine, "hold_if_free", lambda self: False)  # others decoding: this one queues
    body = {"model": "ada", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    r = httpx.post(batching_server.url + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "queue_full"


def test_with_an_engine_process_streams_decode_there_and_end_with_the_server(tiny_personality: str) -> None:
    from companion.server import ServerSettings
    from companion.server.settings import Limits
    from models.engines.llama.engine_process import EngineProcess
    from models.gate import inside_checked_call

    running = start_server(ServerSettings(host="127.0.0.1", port=0, limits=Limits(batch_rows=8, engine_process=True)))
    try:
        _all_end(running.url, 4)
        with inside_checked_call():
            engine = running.app.state.companion.runner.get_manager().load_model("personality", "ada").base.engine
        scheduler = engine.scheduler
        assert isinstance(scheduler, EngineProcess) and scheduler.process.poll() is None
    finally:
        running.stop()
    assert scheduler.process.wait(timeout=20) is not None and engine.scheduler is None
