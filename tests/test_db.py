"""The metadata database: engines, pragmas, numbered migrations and constraints."""

from __future__ import annotations

import ast
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError as SAIntegrityError

from models import db
from models.db import Migration


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("COMPANION_HOME", str(tmp_path))
    yield tmp_path
    db.dispose_engines()


@pytest.fixture
def engine(home: Path) -> sa.Engine:
    return db.connect()


def version_row(version: str = "1.0.0") -> dict[str, object]:
    return {
        "category": "personality",
        "name": "luna",
        "version": version,
        "path": f"store/personality/luna/{version}",
        "created_at": db.utc_now(),
        "manifest_sha256": "0" * 64,
        "lineage": {"base": "gpt2", "data": ["a.jsonl"]},
    }


def applied(engine: sa.Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        query = sa.select(db.schema_migrations.c.version, db.schema_migrations.c.name)
        return [tuple(row) for row in conn.execute(query.order_by("version"))]


def test_default_database_in_home(home: Path, engine: sa.Engine) -> None:
    assert db.default_url() == f"sqlite:///{home / 'companion.db'}"
    assert (home / "companion.db").exists()
    names = set(sa.inspect(engine).get_table_names())
    assert names >= {"schema_migrations", "model_versions", "aliases", "alias_history"}


def test_sqlite_pragmas_on_every_connection(engine: sa.Engine) -> None:
    for _ in range(2):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000
        engine.dispose()  # the next round gets a new DBAPI connection


def test_engines_cached_per_url(home: Path, tmp_path: Path) -> None:
    assert db.get_engine() is db.get_engine()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    assert db.get_engine(other) is not db.get_engine()
    assert db.connect(other) is db.get_engine(other)


def test_migrate_is_idempotent(home: Path) -> None:
    engine = db.get_engine()
    assert db.schema_version(engine) == 0
    assert db.migrate(engine) == [m.number for m in db.MIGRATIONS]
    assert db.migrate(engine) == []
    assert db.migrate(engine) == []
    assert applied(engine) == [(m.number, m.name) for m in db.MIGRATIONS]
    assert db.schema_version(engine) == len(db.MIGRATIONS)
    with engine.connect() as conn:
        stamp = conn.scalar(sa.select(db.schema_migrations.c.applied_at))
    assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)


def test_migrated_schema_matches_metadata(engine: sa.Engine) -> None:
    inspector = sa.inspect(engine)
    for table in db.metadata.sorted_tables:
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name: c.nullable for c in table.columns}, table.name
        unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table.name)}
        expected = {tuple(c.name for c in u.columns) for u in table.constraints if isinstance(u, sa.UniqueConstraint)}
        assert unique == expected, table.name
        foreign = {tuple(fk["constrained_columns"]) for fk in inspector.get_foreign_keys(table.name)}
        assert foreign == {tuple(fk.column_keys) for fk in table.foreign_key_constraints}


def test_unique_version_enforced(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(db.model_versions).values(**version_row()))
    with pytest.raises(SAIntegrityError, match="UNIQUE"), engine.begin() as conn:
        conn.execute(sa.insert(db.model_versions).values(**version_row()))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(db.model_versions.c.lineage)).all()
    assert rows == [({"base": "gpt2", "data": ["a.jsonl"]},)]


def test_alias_must_point_at_a_known_version(engine: sa.Engine) -> None:
    alias = {"category": "personality", "name": "luna", "alias": "prod", "updated_at": "x"}
    with pytest.raises(SAIntegrityError, match="FOREIGN KEY"), engine.begin() as conn:
        conn.execute(sa.insert(db.aliases).values(**alias, version="9.9.9"))
    with engine.begin() as conn:
        conn.execute(sa.insert(db.model_versions).values(**version_row()))
        conn.execute(sa.insert(db.aliases).values(**alias, version="1.0.0"))


def _create_extra(conn: sa.Connection) -> None:
    md = sa.MetaData()
    sa.Table("extra", md, sa.Column("id", sa.Integer, primary_key=True))
    md.create_all(conn)


def test_appending_a_migration(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    extra = Migration(len(db.MIGRATIONS) + 1, "extra", _create_extra)
    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, extra])
    assert db.migrate(engine) == [extra.number]
    assert db.migrate(engine) == []
    assert "extra" in sa.inspect(engine).get_table_names()
    assert db.schema_version(engine) == extra.number


def test_failing_migration_rolls_back(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(conn: sa.Connection) -> None:
        _create_extra(conn)
        raise RuntimeError("migration bug")

    before = db.schema_version(engine)
    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, Migration(before + 1, "bad", broken)])
    with pytest.raises(RuntimeError, match="migration bug"):
        db.migrate(engine)
    assert "extra" not in sa.inspect(engine).get_table_names()  # the DDL was rolled back
    assert db.schema_version(engine) == before


def test_misnumbered_migrations_refused(engine: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db, "MIGRATIONS", [*db.MIGRATIONS, Migration(len(db.MIGRATIONS) + 2, "gap", _create_extra)])
    with pytest.raises(RuntimeError, match="numbered 1, 2, 3"):
        db.migrate(engine)


def test_write_transaction_takes_the_write_lock(engine: sa.Engine, home: Path) -> None:
    with db.write_transaction(engine) as conn:
        conn.execute(sa.select(1))  # nothing written yet, but the lock is already held
        other = sqlite3.connect(home / "companion.db", timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_threads_of_one_process_queue_for_the_write_lock_in_python(engine: sa.Engine) -> None:
    """Another thread waits on the engine's Python lock (woken as soon as it is free), not in
    SQLite's busy handler, which polls with sleeps of up to 100 ms."""
    order: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with db.write_transaction(engine):
            order.append("first in")
            inside.set()
            release.wait(5)
            order.append("first out")

    def second() -> None:
        inside.wait(5)
        with db.write_transaction(engine):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    inside.wait(5)
    time.sleep(0.05)
    lock = db._sqlite_write_lock(engine)
    assert not lock.acquire(blocking=False)  # held by the first thread's transaction
    release.set()
    for t in threads:
        t.join(5)
    assert order == ["first in", "first out", "second in"]
    assert lock.acquire(blocking=False)  # free again once both transactions ended
    lock.release()


MIGRATE = """
import sys, time
from models import db
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
print(db.migrate(db.get_engine(sys.argv[1])))
"""


def test_concurrent_migrate_from_two_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    start = str(time.time() + 1.0)  # both processes start migrating at the same instant
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(MIGRATE), url, start],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    numbers = sorted(n for out, _ in results for n in ast.literal_eval(out.strip()))
    assert numbers == [m.number for m in db.MIGRATIONS]  # each applied exactly once
    engine = db.get_engine(url)
    assert applied(engine) == [(m.number, m.name) for m in db.MIGRATIONS]
    db.dispose_engines()


def test_utc_now_is_timezone_aware() -> None:
    stamp = datetime.fromisoformat(db.utc_now())
    assert stamp.utcoffset() == timedelta(0)


def test_public_api() -> None:
    for name in db.__all__:
        assert hasattr(db, name), name
