"""The audit chain: any edit, deletion or reordering of any row is detected and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from models import db
from models.audit import AuditLog, canonical
from models.errors import AuditError

N = 6


@pytest.fixture
def log(database) -> AuditLog:
    log = AuditLog(checkpoint_every=1000)
    for i in range(N):
        log.append(f"user{i % 2}", f"personality/m{i}", "generate", level="generate", allowed=bool(i % 3))
    assert log.verify().ok
    return log


def rows(log: AuditLog) -> list[dict]:
    with log.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(db.audit_log).order_by(db.audit_log.c.seq))]


def execute(log: AuditLog, stmt) -> None:
    with log.engine.begin() as conn:
        conn.execute(stmt)


@pytest.mark.parametrize("position", range(1, N + 1))
@pytest.mark.parametrize("column", ["model", "action", "allowed", "at", "detail", "subject"])
def test_editing_any_column_of_any_row_is_detected(log: AuditLog, position: int, column: str) -> None:
    value = {"allowed": 7, "detail": json.dumps({"rule": "forged"})}.get(column, "forged")
    execute(log, update(db.audit_log).where(db.audit_log.c.seq == position).values({column: value}))
    report = log.verify()
    assert not report and report.first_bad == position, report


@pytest.mark.parametrize("position", range(1, N + 1))
def test_editing_a_row_and_its_hash_is_detected_at_the_next_link(log: AuditLog, position: int) -> None:
    row = rows(log)[position - 1] | {"action": "forged"}
    from models.audit import _row_hash

    execute(
        log, update(db.audit_log).where(db.audit_log.c.seq == position).values(action="forged", hash=_row_hash(row))
    )
    report = log.verify()
    if position < N:
        assert not report and report.first_bad == position + 1
    else:  # the newest row: the signed head no longer matches it (before issue 15 this passed)
        assert not report and report.first_bad == N and "signed head" in report.problem


@pytest.mark.parametrize("position", range(1, N))
def test_deleting_any_row_is_detected(log: AuditLog, position: int) -> None:
    execute(log, delete(db.audit_log).where(db.audit_log.c.seq == position))
    report = log.verify()
    assert not report and report.first_bad == position


def test_cutting_off_the_tail_is_detected_by_the_signed_checkpoint(log: AuditLog) -> None:
    assert log.checkpoint() == N
    execute(log, delete(db.audit_log).where(db.audit_log.c.seq >= N - 1))
    report = log.verify()
    assert not report and report.first_bad == N - 1 and "cut off" in report.problem


def test_wiping_checkpoints_is_caught_by_the_head_file(log: AuditLog, companion_home: Path) -> None:
    log.checkpoint()
    execute(log, delete(db.audit_checkpoints))
    execute(log, delete(db.audit_log).where(db.audit_log.c.seq == N))
    assert (companion_home / "audit" / "head.json").exists()
    assert log.verify().first_bad == N


@pytest.mark.parametrize("position", range(1, N))
def test_swapping_any_two_neighbouring_rows_is_detected(log: AuditLog, position: int) -> None:
    a, b = rows(log)[position - 1], rows(log)[position]
    content = ("at", "subject", "model", "action", "level", "allowed", "detail", "prev_hash", "hash")
    execute(log, update(db.audit_log).where(db.audit_log.c.seq == a["seq"]).values({k: b[k] for k in content}))
    execute(log, update(db.audit_log).where(db.audit_log.c.seq == b["seq"]).values({k: a[k] for k in content}))
    report = log.verify()
    assert not report and report.first_bad == position


def test_forged_checkpoint_signature_is_detected(log: AuditLog) -> None:
    log.checkpoint()
    execute(log, update(db.audit_checkpoints).values(signature="AAAA" + "A" * 84))
    assert "bad signature" in log.verify().problem


def test_periodic_checkpoints_and_canonical_encoding(database) -> None:
    log = AuditLog(checkpoint_every=3)
    for _ in range(7):
        log.append("u", "m", "a")
    report = log.verify()
    assert report.ok and report.checkpoints == 2 and report.unsigned_tail == 0  # rows 3 and 6, and the head
    assert canonical({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_show_filters_by_user_model_since_and_bad_input(log: AuditLog) -> None:
    assert {r.user for r in log.show(user="user1")} == {"user1"}
    assert [r.model for r in log.show(model="personality/m2")] == ["personality/m2"]
    assert len(log.show(model="personality/*", since="1d")) == N
    assert log.show(since="2999-01-01") == []
    with pytest.raises(AuditError, match="--since 'yesterday'"):
        log.show(since="yesterday")
    with pytest.raises(AuditError):
        log.append("", "m", "a")


def test_cli_verify_names_the_first_bad_row_and_show_filters(log: AuditLog) -> None:
    from typer.testing import CliRunner

    from companion.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify"])
    assert ok.exit_code == 0 and "intact" in ok.output
    shown = runner.invoke(app, ["audit", "show", "--user", "user0", "--json"])
    assert shown.exit_code == 0 and {r["user"] for r in json.loads(shown.stdout)} == {"user0"}
    execute(log, update(db.audit_log).where(db.audit_log.c.seq == 4).values(model="x"))
    bad = runner.invoke(app, ["audit", "verify"])
    assert bad.exit_code == 1 and "row 4" in bad.output


# --- issue 15 item 5: nothing can be rewritten without the installation key --------------------


def _rehash_all(log: AuditLog, edit_seq: int) -> None:
    """What an attacker with the database but not the key can do: edit a row, recompute every
    hash and link after it."""
    from models.audit import GENESIS, _row_hash

    prev = GENESIS
    for row in rows(log):
        if row["seq"] == edit_seq:
            row["action"] = "forged"
        row["prev_hash"] = prev
        row["hash"] = _row_hash(row)
        execute(
            log,
            update(db.audit_log)
            .where(db.audit_log.c.seq == row["seq"])
            .values(action=row["action"], prev_hash=row["prev_hash"], hash=row["hash"]),
        )
        prev = row["hash"]


def test_a_rehashed_chain_without_checkpoints_or_head_fails(log: AuditLog, companion_home: Path) -> None:
    log.checkpoint()
    _rehash_all(log, 2)
    execute(log, delete(db.audit_checkpoints))
    (companion_home / "audit" / "head.json").unlink()
    report = log.verify()
    assert not report and "head" in report.problem and "missing" in report.problem


def test_a_rehashed_chain_fails_on_the_signed_head(log: AuditLog) -> None:
    _rehash_all(log, 2)
    report = log.verify()
    assert not report and "signed head" in report.problem


def test_cutting_the_tail_and_the_newest_checkpoint_fails(database, companion_home: Path) -> None:
    log = AuditLog(checkpoint_every=3)
    for i in range(8):
        log.append("u", "m", f"a{i}")
    execute(log, delete(db.audit_log).where(db.audit_log.c.seq >= 6))
    execute(log, delete(db.audit_checkpoints).where(db.audit_checkpoints.c.seq == 6))
    report = log.verify()
    assert not report and "cut off" in report.problem


def test_a_deleted_interval_checkpoint_fails(database) -> None:
    log = AuditLog(checkpoint_every=3)
    for i in range(10):
        log.append("u", "m", f"a{i}")
    assert log.verify().ok
    execute(log, delete(db.audit_checkpoints).where(db.audit_checkpoints.c.seq == 6))
    report = log.verify()
    assert not report and "no signed checkpoint at row 6" in report.problem


def test_rows_cannot_be_reattributed_and_erasure_still_verifies(log: AuditLog) -> None:
    with log.engine.begin() as conn:
        conn.execute(update(db.audit_subjects).where(db.audit_subjects.c.user_id == "user0").values(user_id="mallory"))
    report = log.verify()
    assert not report and "re-attributed" in report.problem
    with log.engine.begin() as conn:
        conn.execute(update(db.audit_subjects).where(db.audit_subjects.c.user_id == "mallory").values(user_id="user0"))
    assert log.verify().ok
    with log.engine.begin() as conn:  # swapping two users' subjects is caught too
        a = conn.execute(select(db.audit_subjects).where(db.audit_subjects.c.user_id == "user0")).first()
        b = conn.execute(select(db.audit_subjects).where(db.audit_subjects.c.user_id == "user1")).first()
        conn.execute(update(db.audit_subjects).where(db.audit_subjects.c.subject == a.subject).values(user_id="tmp"))
        conn.execute(update(db.audit_subjects).where(db.audit_subjects.c.subject == b.subject).values(user_id="user0"))
        conn.execute(update(db.audit_subjects).where(db.audit_subjects.c.subject == a.subject).values(user_id="user1"))
    assert "re-attributed" in log.verify().problem
    with log.engine.begin() as conn:  # erasure: the mapping and its salt go, the rows stay unnamed
        conn.execute(delete(db.audit_subjects))
    assert log.verify().ok
    assert {r.user for r in log.show()} == {None}
    assert all("subject_binding" not in r.detail for r in log.show())


def test_show_for_a_user_includes_what_was_done_to_them(log: AuditLog) -> None:
    """A grant is written under the admin who made it; `show --user ada` still finds it (and a
    user named ada_x, whose name LIKE would match with an unescaped `_`, does not)."""
    log.append("admin", "personality/*", "grant:generate", detail={"for_user": "ada"})
    log.append("admin", "personality/*", "grant:generate", detail={"for_user": "adaxx"})
    log.append("admin", "personality/*", "grant:generate", detail={"for_user": "ad_"})
    log.append("ada", "personality/luna", "generate", level="generate", allowed=True)
    rows = log.show(user="ada")
    assert [(r.user, r.action) for r in rows] == [("admin", "grant:generate"), ("ada", "generate")]
    assert rows[0].detail == {"for_user": "ada"}
    assert [r.detail for r in log.show(user="ad_")] == [{"for_user": "ad_"}]


def _append_from_threads(log: AuditLog, n: int) -> tuple[dict[int, int], dict[int, BaseException]]:
    import threading

    seqs: dict[int, int] = {}
    errors: dict[int, BaseException] = {}

    def one(i: int) -> None:
        try:
            seqs[i] = log.append(f"user{i % 3}", "personality/luna", "generate", detail={"i": i})
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seqs, errors


def test_concurrent_appends_are_group_committed_in_order(database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows queued while a transaction is written go into the next one; each caller gets its own
    row's seq, the chain has no gaps and verifies."""
    log = AuditLog(checkpoint_every=5)
    batches: list[int] = []
    real = AuditLog._write

    def slow(self: AuditLog, batch: list) -> list[int]:
        batches.append(len(batch))
        import time

        time.sleep(0.05)  # the others queue meanwhile
        return real(self, batch)

    monkeypatch.setattr(AuditLog, "_write", slow)
    seqs, errors = _append_from_threads(log, 20)
    assert not errors
    assert sorted(seqs.values()) == list(range(1, 21))
    assert sum(batches) == 20 and len(batches) < 20  # fewer transactions than rows
    by_seq = {r.seq: r.detail["i"] for r in log.show()}
    assert all(by_seq[seq] == i for i, seq in seqs.items())  # each caller's seq is its own row
    assert log.verify().ok


def test_a_failed_group_commit_fails_every_caller_in_it_and_writes_nothing(
    database, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = AuditLog()
    log.append("user0", "personality/luna", "generate")

    def broken(self: AuditLog, batch: list) -> list[int]:
        import time

        time.sleep(0.05)
        raise AuditError("disk full")

    monkeypatch.setattr(AuditLog, "_write", broken)
    seqs, errors = _append_from_threads(log, 8)
    assert not seqs and len(errors) == 8 and all("disk full" in str(e) for e in errors.values())
    monkeypatch.undo()
    assert log.count() == 1 and log.verify().ok
    assert log.append("user1", "personality/luna", "generate") == 2
