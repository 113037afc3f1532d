"""The metadata database: SQLAlchemy Core tables and numbered migrations.

The embedded default is SQLite (`COMPANION_HOME/companion.db`, WAL); multi-instance
deployments pass a `postgresql://` URL. One code path serves both: Core constructs only, the
SQLite pragmas are guarded by dialect, and timestamps are timezone-aware UTC ISO strings
(`utc_now()`), which sort correctly as text on every backend.

    engine = connect()                      # cached per URL, migrated once per process
    with engine.begin() as conn: ...        # an ordinary transaction
    with write_transaction(engine) as conn: # takes the write lock at BEGIN (read-then-write)

Adding a migration
------------------
1. Write `def _m2_events(conn: Connection) -> None` that creates or alters what it needs with
   DDL frozen *inside the function* (`Table(...)` on its own `_migration_metadata()`, or
   `conn.execute(text(...))` for an ALTER). Never create from the module-level `metadata`: a
   later migration may change those definitions, and a fresh database replays every
   migration in order.
2. Append `Migration(2, "events", _m2_events)` to `MIGRATIONS`. Numbers run 1, 2, 3, ... with
   no gaps; never edit, reorder or renumber a migration that has shipped.
3. Update `metadata` (the current schema that queries use) to match the schema after it;
   `tests/test_db.py` checks that a migrated database matches `metadata`.

Each migration runs in its own transaction with the migration lock held (SQLite:
`BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock) and re-checks
`schema_migrations` inside it, so concurrent `migrate` calls from several processes apply
each migration exactly once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Engine,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)

from models.home import database_path

__all__ = [
    "MIGRATIONS",
    "Migration",
    "alias_history",
    "aliases",
    "connect",
    "default_url",
    "dispose_engines",
    "get_engine",
    "metadata",
    "migrate",
    "model_versions",
    "schema_migrations",
    "schema_version",
    "update_sources",
    "utc_now",
    "version_tags",
    "write_transaction",
]

_NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
_IMMEDIATE = "companion_begin_immediate"
_PG_MIGRATION_LOCK = 0x636F6D70  # "comp": the advisory lock key that serializes migrations
_TS = 40  # length of an ISO-8601 timestamp column
DATABASE_URL_ENV = "COMPANION_DATABASE_URL"


def utc_now() -> str:
    """The current time as a timezone-aware UTC ISO-8601 string (microseconds)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


# -- the current schema (what queries use) ----------------------------------------------------

metadata = MetaData(naming_convention=_NAMING)

schema_migrations = Table(
    "schema_migrations",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("name", String(200), nullable=False),
    Column("applied_at", String(_TS), nullable=False),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("category", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", String(_TS), nullable=False),
    Column("author", String(200)),
    Column("notes", Text),
    Column("manifest_sha256", String(64)),
    Column("lineage", JSON),
    UniqueConstraint("category", "name", "version"),
)

aliases = Table(
    "aliases",
    metadata,
    Column("category", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("updated_at", String(_TS), nullable=False),
    PrimaryKeyConstraint("category", "name", "alias"),
    ForeignKeyConstraint(
        ["category", "name", "version"],
        ["model_versions.category", "model_versions.name", "model_versions.version"],
    ),
)

alias_history = Table(
    "alias_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("category", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", String(64)),
    Column("to_version", String(64), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text),
    Column("at", String(_TS), nullable=False),
    Index(None, "category", "name", "alias"),
)

version_tags = Table(
    "version_tags",
    metadata,
    Column("category", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("key", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("updated_at", String(_TS), nullable=False),
    PrimaryKeyConstraint("category", "name", "version", "key"),
    ForeignKeyConstraint(
        ["category", "name", "version"],
        ["model_versions.category", "model_versions.name", "model_versions.version"],
    ),
)

update_sources = Table(
    "update_sources",
    metadata,
    Column("source", String(1000), primary_key=True),
    Column("catalog_version", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("expires", String(_TS), nullable=False),
    Column("seen_at", String(_TS), nullable=False),
)


# -- migrations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    """One numbered schema change; `up` runs inside a transaction holding the migration lock."""

    number: int
    name: str
    up: Callable[[Connection], None]


def _migration_metadata() -> MetaData:
    """A throwaway MetaData for the frozen table definitions inside one migration."""
    return MetaData(naming_convention=_NAMING)


def _m1_initial(conn: Connection) -> None:
    """model_versions, aliases and alias_history, as first shipped (frozen)."""
    md = _migration_metadata()
    Table(
        "model_versions",
        md,
        Column("id", Integer, primary_key=True),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("path", Text, nullable=False),
        Column("created_at", String(_TS), nullable=False),
        Column("author", String(200)),
        Column("notes", Text),
        Column("manifest_sha256", String(64)),
        Column("lineage", JSON),
        UniqueConstraint("category", "name", "version"),
    )
    Table(
        "aliases",
        md,
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("alias", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        PrimaryKeyConstraint("category", "name", "alias"),
        ForeignKeyConstraint(
            ["category", "name", "version"],
            ["model_versions.category", "model_versions.name", "model_versions.version"],
        ),
    )
    Table(
        "alias_history",
        md,
        Column("id", Integer, primary_key=True),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("alias", String(64), nullable=False),
        Column("from_version", String(64)),
        Column("to_version", String(64), nullable=False),
        Column("actor", String(200), nullable=False),
        Column("reason", Text),
        Column("at", String(_TS), nullable=False),
        Index(None, "category", "name", "alias"),
    )
    md.create_all(conn)


def _m2_versions(conn: Connection) -> None:
    """version_tags (key/value labels on a version) and update_sources (the newest catalog
    seen per update source, for rollback and freeze protection), as first shipped (frozen)."""
    md = _migration_metadata()
    # The referenced table, as far as the foreign key needs it (it exists since migration 1).
    Table("model_versions", md, *(Column(c, String(64)) for c in ("category", "name", "version")))
    Table(
        "version_tags",
        md,
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64), nullable=False),
        Column("key", String(64), nullable=False),
        Column("value", Text, nullable=False),
        Column("actor", String(200), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        PrimaryKeyConstraint("category", "name", "version", "key"),
        ForeignKeyConstraint(
            ["category", "name", "version"],
            ["model_versions.category", "model_versions.name", "model_versions.version"],
        ),
    )
    Table(
        "update_sources",
        md,
        Column("source", String(1000), primary_key=True),
        Column("catalog_version", BigInteger, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("expires", String(_TS), nullable=False),
        Column("seen_at", String(_TS), nullable=False),
    )
    md.create_all(conn, tables=[md.tables["version_tags"], md.tables["update_sources"]])


MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _m1_initial),
    Migration(2, "version_tags_and_update_sources", _m2_versions),
]


def _check_numbering(migrations: list[Migration]) -> None:
    numbers = [m.number for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"MIGRATIONS must be numbered 1, 2, 3, ... in order; got {numbers}")


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the database write lock when it begins.

    On SQLite this is `BEGIN IMMEDIATE`, so a read-then-write transaction cannot fail half-way
    with "database is locked"; other backends get an ordinary transaction.
    """
    with engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            yield conn


def migrate(engine: Engine) -> list[int]:
    """Apply the missing migrations in order; return the numbers applied by this call.

    Idempotent, and safe when several processes call it at once.
    """
    _check_numbering(MIGRATIONS)
    applied: list[int] = []
    while True:
        with write_transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            schema_migrations.create(conn, checkfirst=True)
            done = set(conn.scalars(select(schema_migrations.c.version)))
            pending = [m for m in MIGRATIONS if m.number not in done]
            if not pending:
                return applied
            step = pending[0]
            step.up(conn)
            conn.execute(insert(schema_migrations).values(version=step.number, name=step.name, applied_at=utc_now()))
        applied.append(step.number)


def schema_version(engine: Engine) -> int:
    """The highest migration number applied to the database (0 for a fresh one)."""
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, schema_migrations.name):
            return 0
        found = conn.scalar(select(func.max(schema_migrations.c.version)))
    return int(found or 0)


# -- engines ----------------------------------------------------------------------------------

_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_engines_lock = threading.Lock()


def default_url() -> str:
    """`$COMPANION_DATABASE_URL` if set (e.g. `postgresql+psycopg://...`), else
    `sqlite:///<COMPANION_HOME>/companion.db`."""
    return os.environ.get(DATABASE_URL_ENV) or f"sqlite:///{database_path()}"


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN (pysqlite's implicit BEGIN cannot be IMMEDIATE
    # and skips DDL), then set the pragmas outside any transaction.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout=10000")
        _set_wal(cursor)
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _set_wal(cursor: Any) -> None:
    """Switch to WAL once per file. Switching takes an exclusive lock that SQLite's busy handler
    does not always wait for (two processes opening a new file at once get "database is
    locked" immediately), so retry briefly; WAL then persists in the file."""
    import sqlite3
    import time

    for attempt in range(50):
        try:
            if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.01 * (attempt + 1))
    cursor.execute("PRAGMA journal_mode=WAL")


def _on_sqlite_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get(_IMMEDIATE, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the home's SQLite file), created once per process."""
    url = url or default_url()
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url)
            if engine.dialect.name == "sqlite":
                event.listen(engine, "connect", _on_sqlite_connect)
                event.listen(engine, "begin", _on_sqlite_begin)
            _engines[url] = engine
    return engine


def connect(url: str | None = None) -> Engine:
    """The engine for `url`, migrated to the newest schema (once per process and URL)."""
    engine = get_engine(url)
    key = engine.url.render_as_string(hide_password=False)
    with _engines_lock:
        done = key in _migrated
    if not done:
        migrate(engine)
        with _engines_lock:
            _migrated.add(key)
    return engine


def dispose_engines() -> None:
    """Close every cached engine's connections and forget them (tests, forks, shutdown)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
        _migrated.clear()
    for engine in engines:
        engine.dispose()
