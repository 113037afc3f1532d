"""Issue 15 items 2 and 8: data planted through the server is erased to the last byte, for any id
a key can be made for.

Before the fix, erasure left `users/<slug>-<hash>/user_prefs/learner.*` (the learned profile) because
the privacy layer looked under `users/<user_id>`, and it refused "Ada Lovelace" outright although
the server had stored data under that id.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import openai

from models import db
from models.users import user_folder, user_key
from tests.serving.conftest import RunningServer

CANARY = "CANARY-LOVELACE-5d1e"


def _scan(home: Path, needle: bytes) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_everything_planted_through_the_server_is_erased(keyed_server: RunningServer, companion_home: Path) -> None:
    from companion.server.keys import create_key
    from models.personalization.storage import flush
    from models.privacy import PrivacyManager

    user = "Ada Lovelace"
    key = create_key(user, name="test")[0]
    other = create_key("ben", name="test")[0]
    for who, k in ((user, key), ("ben", other)):
        canary = CANARY if who == user else "CANARY-BEN-0a9"
        h = {"Authorization": f"Bearer {k}"}
        client = openai.OpenAI(base_url=keyed_server.base_url, api_key=k, max_retries=0, timeout=60)
        r = client.chat.completions.create(
            model="ada", messages=[{"role": "user", "content": f"My name is {canary}"}], seed=1
        )
        rid = r.choices[0].model_extra["companion"]["response_id"]
        fb = httpx.post(keyed_server.url + "/api/feedback", json={"response_id": rid, "rating": 1}, headers=h)
        assert fb.status_code == 200, fb.text
        mem = httpx.post(keyed_server.url + "/api/me/memory", json={"text": f"Likes {canary}"}, headers=h)
        assert mem.status_code in (200, 201), mem.text
        prefs = httpx.put(keyed_server.url + "/api/me/preferences", json={"preferences": {"name": canary}}, headers=h)
        assert prefs.status_code == 200, prefs.text
    flush()
    folder = user_folder(user)
    learned = sorted(p.name for p in folder.rglob("learner*"))
    assert learned, f"the test should plant a learned profile in {folder}"

    result = PrivacyManager().erase_user_data(user)  # the same id the key stored data under

    db.dispose_engines()
    assert result.removed["files"]["files"] >= len(learned)
    assert not folder.exists()
    assert _scan(companion_home, CANARY.encode()) == []
    assert _scan(companion_home, user_key(user).encode()) == []
    assert [str(p) for p in companion_home.rglob("*") if user_key(user) in p.name] == []
    assert user_folder("ben").exists()  # the other user's data is intact


def test_one_rule_for_user_ids_everywhere() -> None:
    import pytest

    from companion.server.keys import KeyError_, create_key
    from models.errors import PrivacyError
    from models.privacy import PrivacyManager

    for ok in ("Ada Lovelace", "ada@example.com", "discord:1234", "Zoë"):
        create_key(ok, name="t")
        assert PrivacyManager().export_user_data(ok) is not None
    for bad in ("", " ada", "a\nb", "x" * 201):
        with pytest.raises(KeyError_):
            create_key(bad)
        with pytest.raises(PrivacyError):
            PrivacyManager().erase_user_data(bad)
