"""The metadata database: SQLAlchemy Core tables and numbered migrations.

The embedded default is SQLite (`COMPANION_HOME/companion.db`, WAL); multi-instance
deployments pass a `postgresql://` URL. One code path serves both: Core constructs only, the
SQLite pragmas are guarded by dialect, and timestamps are timezone-aware UTC ISO strings
(`utc_now()`), which sort correctly as text on every backend.

    engine = connect()                      # cached per URL, migrated once per process
    with engine.begin() as conn: ...        # an ordinary transaction
    with write_transaction(engine) as conn: # takes the write lock at BEGIN (read-then-write)

The tables live in `models.schema` and the numbered migrations in `models.migrations` (both
re-exported here); this module runs the migrations and owns engines and transactions.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)

from models.migrations import MIGRATIONS, Migration
from models.schema import (
    access_rules,
    alias_history,
    aliases,
    api_keys,
    audit_checkpoints,
    audit_log,
    audit_subjects,
    chat_messages,
    chats,
    consents,
    evaluation_runs,
    feedback,
    generation_events,
    metadata,
    model_versions,
    personality_sessions,
    personalized_responses,
    privacy_state,
    schema_migrations,
    update_sources,
    user_memory,
    user_preferences,
    version_tags,
)

log = logging.getLogger(__name__)

__all__ = [
    "MIGRATIONS",
    "Migration",
    "access_rules",
    "alias_history",
    "aliases",
    "api_keys",
    "audit_checkpoints",
    "audit_log",
    "audit_subjects",
    "chat_messages",
    "chats",
    "connect",
    "consents",
    "default_url",
    "dispose_engines",
    "evaluation_runs",
    "feedback",
    "generation_events",
    "get_engine",
    "metadata",
    "migrate",
    "model_versions",
    "personality_sessions",
    "personalized_responses",
    "privacy_state",
    "schema_migrations",
    "schema_version",
    "update_sources",
    "user_memory",
    "user_preferences",
    "utc_now",
    "version_tags",
    "write_transaction",
]

_IMMEDIATE = "companion_begin_immediate"
_PG_MIGRATION_LOCK = 0x636F6D70  # "comp": the advisory lock key that serializes migrations
DATABASE_URL_ENV = "COMPANION_DATABASE_URL"


def utc_now() -> str:
    """The current time as a timezone-aware UTC ISO-8601 string (microseconds)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _check_numbering(migrations: list[Migration]) -> None:
    numbers = [m.number for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise RuntimeError(f"MIGRATIONS must be numbered 1, 2, 3, ... in order; got {numbers}")


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that takes the database write lock when it begins.

    On SQLite this is `BEGIN IMMEDIATE`, so a read-then-write transaction cannot fail half-way
    with "database is locked"; other backends get an ordinary transaction.

    On SQLite the threads of one process also queue for the write lock on a Python lock first:
    SQLite's busy handler polls with sleeps that grow to 100 ms, so 32 threads writing at once
    (an audit row per request under load) waited for each other's sleeps, not each other's
    work (issue 21: most of a loaded server's time to first token). Other processes still meet
    at SQLite's own lock.
    """
    lock = _sqlite_write_lock(engine) if engine.dialect.name == "sqlite" else contextlib.nullcontext()
    with lock, engine.connect() as conn:
        conn.execution_options(**{_IMMEDIATE: True})
        with conn.begin():
            yield conn


_write_locks: dict[int, threading.RLock] = {}


def upsert(conn: Connection, table: Table, keys: dict[str, Any], values: dict[str, Any]) -> None:
    """Insert the row `keys` + `values`, or update `values` where a row with `keys` (the
    table's primary key) exists: one `INSERT ... ON CONFLICT DO UPDATE` on SQLite and
    PostgreSQL, a read and a write elsewhere."""
    name = conn.dialect.name
    if name in ("sqlite", "postgresql"):
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        stmt = dialect_insert(table).values(**keys, **values)
        conn.execute(stmt.on_conflict_do_update(index_elements=list(keys), set_=values))
        return
    where = [table.c[k] == v for k, v in keys.items()]
    if conn.scalar(select(table.c[next(iter(keys))]).where(*where)) is None:
        conn.execute(insert(table).values(**keys, **values))
    else:
        conn.execute(update(table).where(*where).values(**values))


def _sqlite_write_lock(engine: Engine) -> threading.RLock:
    """The in-process write lock of one SQLite engine (re-entrant: a nested write transaction
    still meets SQLite's lock, as before, rather than deadlocking here)."""
    lock = _write_locks.get(id(engine))
    if lock is None:
        with _engines_lock:
            lock = _write_locks.setdefault(id(engine), threading.RLock())
    return lock


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
    """The active context's database: `$COMPANION_DATABASE_URL` if set (e.g.
    `postgresql+psycopg://...`), else the config's `database_url:`, else
    `sqlite:///<COMPANION_HOME>/companion.db`."""
    from models.context import current

    return current().database_url


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


_BEFORE_DISPOSE: list[Callable[[], Any]] = []


def before_dispose(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Register `fn` (a background writer's flush) to run before `dispose_engines` closes the
    pools, so no writer thread is left holding a connection of a disposed engine."""
    if fn not in _BEFORE_DISPOSE:
        _BEFORE_DISPOSE.append(fn)
    return fn


def dispose_engines() -> None:
    """Close every cached engine's connections and forget them (tests, forks, shutdown).
    Background writers registered with `before_dispose` finish what they hold first."""
    for fn in list(_BEFORE_DISPOSE):
        try:
            fn()
        except Exception as exc:  # a writer that cannot flush must not keep the pools open
            log.warning("before dispose: %s failed (%s: %s)", getattr(fn, "__qualname__", fn), type(exc).__name__, exc)
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
        _migrated.clear()
    for engine in engines:
        engine.dispose()
