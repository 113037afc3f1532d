"""Issue 15 item 9: with the grant docs/serving.md shows, a user may rate their own answers.

Before the fix `POST /api/feedback` was a 403: recording it loaded `personalization/user_prefs`,
which needs `read` that the documented grant (`personality/*: generate`) does not give.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.serving.conftest import RunningServer, start_server

DOCUMENTED_GRANT = 'security:\n  users:\n    "*": {grants: [{models: "personality/*", level: generate}]}\n'


@pytest.fixture
def documented_server(tmp_path: Path, tiny_model_dir: Path, user_config) -> Iterator[RunningServer]:
    from companion.server import ServerSettings
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder
    from tests.personality.conftest import v2_card

    folder = write_personality_folder(tmp_path / "ada", CharacterCard(v2_card()), base_model=str(tiny_model_dir))
    user_config(
        DOCUMENTED_GRANT + "models:\n  personality:\n"
        f"    ada: {{type: personality, path: '{folder}', parameters: {{max_length: 8, seed: 3}}}}\n"
    )
    running = start_server(ServerSettings(host="127.0.0.1", port=0, auth="keys"))
    yield running
    running.stop()


def test_a_user_may_rate_their_own_answer_with_the_documented_grant(documented_server: RunningServer) -> None:
    from companion.server.keys import create_key

    key, other = create_key("rita", name="t")[0], create_key("sam", name="t")[0]
    client = openai.OpenAI(base_url=documented_server.base_url, api_key=key, max_retries=0, timeout=60)
    r = client.chat.completions.create(model="ada", messages=[{"role": "user", "content": "Hi"}], seed=1)
    rid = r.choices[0].model_extra["companion"]["response_id"]
    url = documented_server.url + "/api/feedback"
    ok = httpx.post(url, json={"response_id": rid, "rating": 1}, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200, ok.text
    theirs = httpx.post(url, json={"response_id": rid, "rating": -1}, headers={"Authorization": f"Bearer {other}"})
    assert theirs.status_code == 404  # someone else's answer: not theirs to rate
    models = httpx.get(documented_server.base_url + "/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert "user_prefs" not in [m["id"] for m in models["data"]]  # rating gave no read on the model itself
