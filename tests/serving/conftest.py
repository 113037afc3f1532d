"""Fixtures for the server tests: a tiny personality, and a real uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: Every user may generate with (and read) every model; `admin` stays the local owner's.
GRANT_ALL = 'security:\n  users:\n    "*":\n      grants: [{models: "*", level: generate}]\n'


@pytest.fixture(autouse=True)
def fresh_shared_state() -> Iterator[None]:
    """No process-wide manager, framework or database engine survives a test."""
    from framework.framework_tool import reset_framework
    from models import db
    from models.personality.loader import reset_shared_manager

    reset_shared_manager()
    reset_framework()
    yield
    from models.personalization.storage import flush

    flush()
    reset_shared_manager()
    reset_framework()
    db.dispose_engines()


@pytest.fixture
def tiny_personality(tmp_path: Path, tiny_model_dir: Path, user_config: Callable[[str], Path]) -> str:
    """COMPANION_HOME/config.yaml with personality `ada` on the tiny model; every user may use it."""
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        GRANT_ALL + "models:\n"
        "  base:\n"
        "    tiny:\n"
        "      type: transformer\n"
        "      path: '{tiny}'\n"
        "      parameters: {max_length: 16}\n"
        "  personality:\n"
        "    ada:\n"
        "      type: personality\n"
        f"      path: '{folder}'\n"
        "      parameters: {max_length: 16, seed: 3, context_tokens: 1024}\n"
    )
    return "ada"


@dataclass
class RunningServer:
    url: str
    app: Any
    server: Any
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(settings: Any) -> RunningServer:
    """`create_app(settings)` served by uvicorn in a thread (see `serve_app`)."""
    from companion.server import create_app

    return serve_app(create_app(settings))


def serve_app(app: Any) -> RunningServer:
    """uvicorn in a thread on a socket bound here (port 0: the kernel picks a free one)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    return RunningServer(f"http://127.0.0.1:{port}", app, server, thread)


@pytest.fixture
def server(tiny_personality: str) -> Iterator[RunningServer]:
    """The server in local mode (no key needed on loopback), serving the tiny personality."""
    from companion.server import ServerSettings

    running = start_server(ServerSettings(host="127.0.0.1", port=0))
    yield running
    running.stop()


@pytest.fixture
def keyed_server(tiny_personality: str) -> Iterator[RunningServer]:
    """The server with keys required (as off loopback)."""
    from companion.server import ServerSettings

    running = start_server(ServerSettings(host="127.0.0.1", port=0, auth="keys"))
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningServer) -> Any:
    """The official `openai` client against the local-mode server."""
    import openai

    return openai.OpenAI(base_url=server.base_url, api_key="sk-local", max_retries=0, timeout=60)
