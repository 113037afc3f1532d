"""Issue 16 item 1 through `companion serve`: a card whose lorebook regex is catastrophic must not
freeze the server. Before, one such request stopped every endpoint (the match held the
interpreter lock) and the process ignored SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def _card() -> dict:
    from tests.personality.conftest import v2_card

    card = v2_card()
    card["data"]["first_mes"] = "a" * 40 + "!"
    card["data"]["character_book"] = {
        "entries": [{"keys": ["/(a|aa)+$/"], "content": "boom", "use_regex": True}] * 20,
    }
    return card


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_hostile_lorebook_neither_freezes_the_server_nor_blocks_sigterm(
    tmp_path: Path, tiny_model_dir: Path, companion_home: Path
) -> None:
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder

    folder = write_personality_folder(tmp_path / "evil", CharacterCard(_card()), base_model=str(tiny_model_dir))
    (companion_home / "config.yaml").write_text(
        f"models:\n  personality:\n    evil: {{type: personality, path: '{folder}', parameters: {{max_length: 4}}}}\n"
    )
    port = _free_port()
    env = {**os.environ, "COMPANION_HOME": str(companion_home)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from companion.cli import main; main()", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            time.sleep(0.2)
        answers: list[int] = []
        body = {"model": "evil", "messages": [{"role": "user", "content": "a" * 40 + "!"}], "max_tokens": 4}

        def chat() -> None:
            answers.append(httpx.post(url + "/v1/chat/completions", json=body, timeout=120).status_code)

        threads = [threading.Thread(target=chat) for _ in range(3)]
        for t in threads:
            t.start()
        for _ in range(5):  # while the hostile requests run, the server keeps answering
            t0 = time.monotonic()
            assert httpx.get(url + "/v1/models", timeout=5).status_code == 200
            assert time.monotonic() - t0 < 1.0
            time.sleep(0.1)
        for t in threads:
            t.join(60)
        assert answers == [200, 200, 200]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
