"""Consent, export, erasure that reaches every store and the models trained on it, retention,
and compliance checks computed from the real state."""

from __future__ import annotations

import json
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, Text, insert, select, update

from models import db
from models.errors import AccessDenied, PrivacyError
from models.privacy.crypto import read_encrypted, write_encrypted
from models.privacy.manager import PrivacyManager, subject_ref
from models.security import acting_as
from models.version_control import ModelVersionControl


def plant_table(url: str | None = None) -> Table:
    """A feature's own per-user table (feedback, memory...): found by its `user_id` column."""
    md = MetaData()
    table = Table("test_feedback", md, Column("user_id", String(200)), Column("text", Text))
    md.create_all(db.connect(url))
    return table


def plant_feature_rows(user: str, canary: str) -> list[str]:
    """A row with the canary in every per-user table other features define (memory, preferences,
    feedback, responses, ...): required columns get dummy values, text and JSON get the canary."""
    from sqlalchemy import JSON, Float, Integer

    planted = []
    with db.connect().begin() as conn:
        for table in db.metadata.sorted_tables:
            if "user_id" not in table.c or table.name in ("consents", "audit_subjects", "access_rules"):
                continue
            row: dict = {}
            for c in table.c:
                if c.name == "user_id":
                    row[c.name] = user
                elif isinstance(c.type, JSON):
                    row[c.name] = {"note": canary}
                elif isinstance(c.type, Text):
                    row[c.name] = f"{canary} in {table.name}"
                elif isinstance(c.type, Integer | Float):
                    if not (c.primary_key and isinstance(c.type, Integer)):
                        row[c.name] = 1
                elif isinstance(c.type, String):
                    row[c.name] = f"{user}-{c.name}"[: c.type.length or 64]
            conn.execute(insert(table).values(**row))
            planted.append(table.name)
    return planted


def plant_user(home: Path, user: str, canary: str, table: Table) -> None:
    folder = home / "users" / user
    for rel in ("profile.json", "memory.jsonl", "raw/discord/chat.txt", "adapters/a1/train.jsonl"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(json.dumps({"note": f"{canary} in {rel}"}), encoding="utf-8")
    write_encrypted(folder / "preferences.enc", f"likes {canary}".encode())
    with db.connect().begin() as conn:
        conn.execute(insert(table).values(user_id=user, text=f"feedback {canary}"))
    plant_feature_rows(user, canary)
    pm = PrivacyManager()
    pm.record_consent(user, "training")


def lineage_version(luna, subjects: list[str], applied: bool = True) -> str:
    vc = ModelVersionControl()
    info = vc.create_version(
        "luna",
        "trained",
        lineage={"data": {"sha256": "ab"}, "data_subjects": subjects, "anonymization": {"applied": applied}},
    )
    return info.version


def scan(home: Path, needle: bytes) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_erasure_removes_every_canary_and_flags_models(luna, companion_home: Path) -> None:
    table = plant_table()
    plant_user(companion_home, "ada", "CANARY-ADA-7f3e", table)
    plant_user(companion_home, "ben", "CANARY-BEN-19c2", table)
    version = lineage_version(luna, [subject_ref("ada"), subject_ref("ben")])
    pm = PrivacyManager()
    pm.export_user_data("ada")  # an export sits in the user's folder: erasure must take it too
    assert scan(companion_home, b"CANARY-ADA-7f3e")  # planted in plain files and the database

    result = pm.erase_user_data("ada")

    db.dispose_engines()
    assert scan(companion_home, b"CANARY-ADA-7f3e") == []
    assert scan(companion_home, b"ada@") == [] and not (companion_home / "users" / "ada").exists()
    assert result.models == [f"personality/luna@{version}"] and result.removed["files"]["files"] >= 5
    assert result.removed["database"]["test_feedback"] == 1 and result.removed["database"]["consents"] == 1
    for name in plant_feature_rows("carl", "CANARY-CARL"):  # every feature table was reached
        assert result.removed["database"].get(name) == 1, name
    tags = ModelVersionControl().show("luna", version).tags
    assert "retrain_required" in tags
    # the other user's data is intact
    assert len(scan(companion_home, b"CANARY-BEN-19c2")) >= 4
    assert read_encrypted(companion_home / "users/ben/preferences.enc") == b"likes CANARY-BEN-19c2"
    with db.connect().connect() as conn:
        assert conn.scalar(select(table.c.text).where(table.c.user_id == "ben")) == "feedback CANARY-BEN-19c2"
    assert pm.has_consent("ben", "training") and pm.models_trained_on("ben")
    from models.audit import AuditLog

    assert AuditLog().verify().ok and AuditLog().show(user="ada") == []  # rows stay, unnamed


def test_export_is_one_machine_readable_archive(luna, companion_home: Path, tmp_path: Path) -> None:
    table = plant_table()
    plant_user(companion_home, "ada", "CANARY-X", table)
    lineage_version(luna, ["ada"])
    path = PrivacyManager().export_user_data("ada", tmp_path)
    with zipfile.ZipFile(path) as zf:
        data = json.loads(zf.read("export.json"))
    assert data["user_id"] == "ada" and data["stores"]["database"]["test_feedback"][0]["text"] == "feedback CANARY-X"
    assert "profile.json" in data["stores"]["files"]["files"]
    assert data["consents"][0]["purpose"] == "training" and data["models_trained_on_user_data"]


def test_only_the_user_or_an_admin_may_export_or_erase(luna) -> None:
    pm = PrivacyManager()
    with acting_as("mallory"), pytest.raises(AccessDenied):
        pm.erase_user_data("ada")
    with acting_as("ada"):
        pm.erase_user_data("ada")  # one's own data
    with pytest.raises(PrivacyError, match="control characters"):
        pm.erase_user_data("ada\x00")
    # Any id a key can be made for is erasable; its folder is a slug and a hash, never a path.
    from models.users import user_folder

    assert user_folder("../etc").parent.name == "users" and ".." not in user_folder("../etc").name
    pm.erase_user_data("../etc")


def test_consent_records_and_withdrawal() -> None:
    pm = PrivacyManager()
    pm.record_consent("ada", "training")
    pm.record_consent("ada", "training")  # an open consent is not duplicated
    assert pm.has_consent("ada", "training") and len(pm.consents("ada")) == 1
    assert pm.withdraw_consent("ada", "training") == 1 and not pm.has_consent("ada", "training")
    with pytest.raises(PrivacyError, match="consent purpose 'selling'"):
        pm.record_consent("ada", "selling")


def checks(report) -> dict[str, bool]:
    return {f"{c.standard}:{c.name}": c.passed for c in report.checks}


def test_compliance_is_computed_from_state(luna, user_config, companion_home: Path) -> None:
    pm = PrivacyManager()
    fresh = checks(pm.check_compliance("luna", ["GDPR", "CCPA"]))
    assert fresh["GDPR:retention_enforced"] is False  # nothing configured yet
    assert fresh["GDPR:lineage_anonymized"] and fresh["GDPR:consent_on_record"]  # never trained on data

    lineage_version(luna, [subject_ref("ada")], applied=False)
    report = pm.check_compliance("luna", ["GDPR"])
    got = checks(report)
    assert not got["GDPR:lineage_anonymized"] and not got["GDPR:consent_on_record"] and not report

    pm.record_consent("ada", "training")
    lineage_version(luna, [subject_ref("ada")], applied=True)
    # the earlier, un-anonymized version is still in the lineage: still a failure
    assert not checks(pm.check_compliance("luna", ["GDPR"]))["GDPR:lineage_anonymized"]
    assert checks(pm.check_compliance("luna", ["GDPR"]))["GDPR:consent_on_record"]

    pm.record_consent("ada", "ccpa_opt_out")
    assert not checks(pm.check_compliance("luna", ["CCPA"]))["CCPA:opt_out_honoured"]

    user_config(luna + "privacy:\n  retention: {generation_events: 30}\n")
    assert not checks(pm.check_compliance("luna", ["GDPR"]))["GDPR:retention_enforced"]  # never swept
    pm.sweep()
    assert checks(pm.check_compliance("luna", ["GDPR"]))["GDPR:retention_enforced"]

    (companion_home / "users" / "ada").mkdir(parents=True)
    (companion_home / "users" / "ada" / "memory.jsonl").write_text("plain text memory")
    enc = next(c for c in pm.check_compliance("luna", ["GDPR"]).checks if c.name == "encryption_at_rest")
    assert not enc.passed and enc.evidence["unencrypted_user_files"] == ["users/ada/memory.jsonl"]
    planted = plant_feature_rows("ada", "plain words")  # other features' tables, stored in clear
    enc = next(c for c in pm.check_compliance("luna", ["GDPR"]).checks if c.name == "encryption_at_rest")
    assert set(enc.evidence["tables_with_plaintext_user_rows"]) <= set(planted)
    assert bool(enc.evidence["tables_with_plaintext_user_rows"]) == bool(planted)

    with db.connect().begin() as conn:
        conn.execute(update(db.audit_log).where(db.audit_log.c.seq == 1).values(action="forged"))
    audit = next(c for c in pm.check_compliance("luna", ["GDPR"]).checks if c.name == "audit_chain_verifies")
    assert not audit.passed and audit.evidence["first_bad"] == 1


def test_unknown_standard_is_an_error() -> None:
    with pytest.raises(PrivacyError, match="unknown 'HIPAA'"):
        PrivacyManager().check_compliance("luna", ["GDPR", "HIPAA"])


def test_sweep_applies_retention(user_config, companion_home: Path) -> None:
    user_config("privacy:\n  retention: {raw_data: 7, consents: 30}\n")
    raw = companion_home / "users" / "ada" / "raw" / "old.txt"
    raw.parent.mkdir(parents=True)
    raw.write_text("old chat")
    fresh = raw.with_name("new.txt")
    fresh.write_text("new chat")
    import os

    old = (datetime.now(UTC) - timedelta(days=10)).timestamp()
    os.utime(raw, (old, old))
    pm = PrivacyManager()
    pm.record_consent("ada", "analytics")
    pm.withdraw_consent("ada", "analytics")
    removed = pm.sweep(now=datetime.now(UTC) + timedelta(days=31))
    assert removed == {"raw_data": 2, "consents": 1}  # both files are 31+ days old by then
    assert pm.last_sweep() is not None and not raw.exists()


def test_cli_privacy_commands(luna, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from companion.cli import app

    runner = CliRunner()
    src = tmp_path / "chat.jsonl"
    src.write_text(json.dumps({"text": "mail ada@example.com"}) + "\n")
    res = runner.invoke(app, ["privacy", "anonymize", str(src), "-l", "low", "--spacy-model", "none"])
    assert res.exit_code == 0 and "<EMAIL_ADDRESS>" in res.stdout
    assert runner.invoke(app, ["privacy", "consent", "ada", "training"]).exit_code == 0
    res = runner.invoke(app, ["privacy", "compliance", "luna", "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["status"] == "non-compliant"  # no retention set
    res = runner.invoke(app, ["privacy", "erase", "ada", "--yes", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["removed"]["database"]["consents"] == 1
    assert runner.invoke(app, ["privacy", "compliance", "luna", "-s", "SOX"]).exit_code == 1
