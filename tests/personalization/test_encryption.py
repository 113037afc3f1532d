"""Personalization data at rest: encrypted in the database and in users/, readable through the
library, exported in the clear, and checked by the privacy compliance report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from models import db
from models.personalization import UserMemory, load_personalization_model, record_feedback, save_preferences
from models.personalization.preferences import load_preferences
from models.personalization.storage import SEALED, export_user, get_response, learner_dir, list_feedback
from models.privacy.crypto import FERNET_PREFIX
from tests.personalization.conftest import GRANT_ALL, LONG_FORMAL

TOKEN = FERNET_PREFIX.decode()


def _use_personalization(user: str = "sam") -> str:
    save_preferences(user, {"length": "long", "tone": ["warm"]})
    UserMemory(user).add("Has a cat called Ink", kind="person")
    model = load_personalization_model("user_prefs")
    r = model.adapt_response(LONG_FORMAL, {"length": "long", "formality": "formal"}, user=user)
    record_feedback(r.response_id, rating=1)
    from models.chats import ChatStore

    chats = ChatStore(user)
    chats.append(chats.create("personality/luna", title="Ink's story").id, "user", "Ink ate my plot notes")
    return r.response_id


def _raw_rows() -> dict[str, list[dict]]:
    with db.connect().connect() as conn:
        return {name: [dict(r) for r in conn.execute(select(db.metadata.tables[name])).mappings()] for name in SEALED}


def test_user_data_is_encrypted_in_the_database_and_in_files(companion_home: Path) -> None:
    response_id = _use_personalization()
    raw = _raw_rows()
    for table, columns in SEALED.items():
        assert raw[table], table
        for row in raw[table]:
            for column in columns:
                value = row[column]
                assert value is None or (isinstance(value, str) and value.startswith(TOKEN)), (table, column)
    # tokens are random base64: "Ink" turns up inside one about once in 12 runs, so look outside them
    dump = re.sub(TOKEN + r"[A-Za-z0-9_=-]+", "<token>", json.dumps(raw, default=str))
    assert "Ink" not in dump and "warm" not in dump and "Thank" not in dump
    files = [p for p in (companion_home / "users").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"learner.json", "learner.safetensors"}
    assert all(p.read_bytes().startswith(FERNET_PREFIX) for p in files)
    # ...and the library reads it all back
    assert load_preferences("sam").tone == ["warm"]
    assert [f.text for f in UserMemory("sam").list()] == ["Has a cat called Ink"]
    assert get_response(response_id)["candidates"] and list_feedback(user="sam")[0]["event"]["kind"] == "rating"
    model = load_personalization_model("user_prefs")
    assert model.learner_for("sam").updates >= 1
    exported = export_user("sam")
    assert exported["memory"][0]["text"] == "Has a cat called Ink" and exported["learners"]["user_prefs"]


def test_the_same_fact_is_still_stored_once(companion_home: Path) -> None:
    memory = UserMemory("sam")
    first = memory.add("Writes at night")
    assert memory.add("Writes  at night") == first and len(memory.list()) == 1
    memory.edit(first, "Writes at dawn")
    assert memory.get(first).text == "Writes at dawn"


def test_clear_data_stays_readable_when_encryption_is_turned_on(
    companion_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (companion_home / "config.yaml").write_text(GRANT_ALL + "privacy:\n  encrypt_at_rest: false\n")
    _use_personalization("ana")
    raw = _raw_rows()
    assert any("Ink" in str(row["text"]) for row in raw["user_memory"])  # written in the clear
    assert not any(p.read_bytes().startswith(FERNET_PREFIX) for p in (companion_home / "users").rglob("*.json"))
    from models.errors import PrivacyError
    from models.personalization.storage import seal_stored

    with pytest.raises(PrivacyError, match="encrypt_at_rest is off"):
        seal_stored()
    (companion_home / "config.yaml").write_text(GRANT_ALL)  # a running process sees the edit at once
    UserMemory("ana").add("Likes rain")
    texts = [f.text for f in UserMemory("ana").list()]
    assert texts == ["Has a cat called Ink", "Likes rain"]
    with db.connect().connect() as conn:
        stored = conn.execute(select(db.user_memory.c.text).order_by(db.user_memory.c.id)).scalars().all()
    assert stored[0] == "Has a cat called Ink" and stored[1].startswith(TOKEN)
    # `companion privacy encrypt` seals what was written in the clear
    from typer.testing import CliRunner

    from companion.cli import app

    r = CliRunner().invoke(app, ["privacy", "encrypt", "--json"])
    assert r.exit_code == 0, r.output
    sealed = json.loads(r.output)
    assert sealed["user_memory"] == 1 and sealed["user_preferences"] == 1 and sealed["learner_files"] == 2
    for table, columns in SEALED.items():
        for row in _raw_rows()[table]:
            assert all(row[c] is None or str(row[c]).startswith(TOKEN) for c in columns), table
    assert [f.text for f in UserMemory("ana").list()] == texts
    assert load_personalization_model("user_prefs").learner_for("ana").updates >= 1
    assert json.loads(CliRunner().invoke(app, ["privacy", "encrypt", "--json"]).output)["user_memory"] == 0


def test_a_wrong_key_is_a_clear_error_and_compliance_sees_clear_rows(companion_home: Path) -> None:
    from models.errors import PrivacyError
    from models.privacy import PrivacyManager

    _use_personalization()
    enc = next(c for c in PrivacyManager().check_compliance("luna", ["GDPR"]).checks if c.name == "encryption_at_rest")
    assert enc.passed, enc.evidence
    with db.connect().begin() as conn:
        conn.execute(db.user_memory.insert().values(user_id="sam", kind="fact", text="in the clear", source="user",
                                                   created_at=db.utc_now(), updated_at=db.utc_now()))  # fmt: skip
    enc = next(c for c in PrivacyManager().check_compliance("luna", ["GDPR"]).checks if c.name == "encryption_at_rest")
    assert not enc.passed and enc.evidence["tables_with_plaintext_user_rows"] == {"user_memory": 1}
    key = companion_home / "keys" / "data.key"
    from cryptography.fernet import Fernet

    key.write_bytes(Fernet.generate_key())
    from models.personalization.storage import forget_cached

    forget_cached("memory", "sam")
    with pytest.raises(PrivacyError, match="does not match the key"):
        UserMemory("sam").list()
    assert learner_dir("sam", "user_prefs").exists()
