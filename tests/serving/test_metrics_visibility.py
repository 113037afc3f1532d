"""Issue 15 item 11: `/metrics` shows only the series of models the caller may read."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.serving.conftest import RunningServer, start_server

POLICY = (
    "security:\n  users:\n"
    '    rita: {grants: [{models: "personality/*", level: generate}]}\n'
    '    bob: {grants: [{models: "*", level: generate}]}\n'
)


@pytest.fixture
def two_users(tmp_path: Path, tiny_model_dir: Path, user_config) -> Iterator[RunningServer]:
    from companion.server import ServerSettings
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        POLICY + "models:\n"
        "  base:\n    tiny: {type: transformer, path: '{tiny}', parameters: {max_length: 4}}\n"
        f"  personality:\n    ada: {{type: personality, path: '{folder}', parameters: {{max_length: 4}}}}\n"
    )
    running = start_server(ServerSettings(host="127.0.0.1", port=0, auth="keys"))
    yield running
    running.stop()


def test_metrics_hide_models_the_caller_may_not_read(two_users: RunningServer) -> None:
    from companion.server.keys import create_key

    rita, bob = (create_key(u, name="t")[0] for u in ("rita", "bob"))
    for model in ("tiny", "ada"):
        r = httpx.post(
            two_users.base_url + "/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
            headers={"Authorization": f"Bearer {bob}"},
            timeout=60,
        )
        assert r.status_code == 200, r.text

    def scrape(key: str) -> str:
        r = httpx.get(two_users.url + "/metrics", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        return r.text

    everything, hers = scrape(bob), scrape(rita)

    def series(text: str) -> set[tuple[str, str]]:  # (category, model) of every labelled sample
        return set(re.findall(r'category="([^"]*)",engine="[^"]*",(?:le="[^"]*",)?model="([^"]*)"', text))

    assert {("base", "tiny"), ("personality", "ada")} <= series(everything)
    assert ("personality", "ada") in series(hers)
    assert not {c for c, _ in series(hers)} - {"personality"}  # nothing rita may not read (process-wide registry)
    assert "companion_monitor_events" in hers  # service-wide counters stay
