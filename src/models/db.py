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
import logging
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
    Float,
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


def _operations_tables(md: MetaData) -> tuple[Table, Table]:
    """generation_events (one row per generation) and evaluation_runs (one per `companion eval`)."""
    events = Table(
        "generation_events",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64)),
        Column("engine", String(32), nullable=False),
        Column("user_hash", String(32)),
        Column("latency_s", Float, nullable=False),
        Column("ttft_s", Float),
        Column("prompt_tokens", Integer, nullable=False),
        Column("completion_tokens", Integer, nullable=False),
        Column("finish_reason", String(32), nullable=False),
        Column("error", String(200)),
        Index(None, "category", "name", "at"),
    )
    runs = Table(
        "evaluation_runs",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64)),
        Column("dataset", String(500), nullable=False),
        Column("dataset_sha256", String(64), nullable=False),
        Column("tokens", Integer, nullable=False),
        Column("loss", Float, nullable=False),
        Column("perplexity", Float, nullable=False),
        Column("next_token_accuracy", Float, nullable=False),
        Column("emotion_agreement", Float),
        Column("emotion_samples", Integer),
        Column("details", JSON),
        Index(None, "category", "name", "at"),
    )
    return events, runs


generation_events, evaluation_runs = _operations_tables(metadata)


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


def _m3_operations(conn: Connection) -> None:
    """generation_events and evaluation_runs (models.monitoring), as first shipped (frozen)."""
    md = _migration_metadata()
    md_events = Table(
        "generation_events",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64)),
        Column("engine", String(32), nullable=False),
        Column("user_hash", String(32)),
        Column("latency_s", Float, nullable=False),
        Column("ttft_s", Float),
        Column("prompt_tokens", Integer, nullable=False),
        Column("completion_tokens", Integer, nullable=False),
        Column("finish_reason", String(32), nullable=False),
        Column("error", String(200)),
        Index(None, "category", "name", "at"),
    )
    md_runs = Table(
        "evaluation_runs",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("name", String(64), nullable=False),
        Column("version", String(64)),
        Column("dataset", String(500), nullable=False),
        Column("dataset_sha256", String(64), nullable=False),
        Column("tokens", Integer, nullable=False),
        Column("loss", Float, nullable=False),
        Column("perplexity", Float, nullable=False),
        Column("next_token_accuracy", Float, nullable=False),
        Column("emotion_agreement", Float),
        Column("emotion_samples", Integer),
        Column("details", JSON),
        Index(None, "category", "name", "at"),
    )
    md.create_all(conn, tables=[md_events, md_runs])


def _security_tables(md: MetaData) -> list[Table]:
    """Frozen DDL of migration 4 (never edit: change these tables with a new migration).

    The audit chain, its signed checkpoints and subject map, database access rules, consent
    records and privacy bookkeeping (issue 9; see models.audit, models.security, models.privacy)."""
    return [
        Table(
            "audit_log",
            md,
            Column("seq", BigInteger, primary_key=True, autoincrement=False),
            Column("at", String(_TS), nullable=False),
            Column("subject", String(64), nullable=False),
            Column("model", String(200), nullable=False),
            Column("action", String(100), nullable=False),
            Column("level", String(16)),
            Column("allowed", Integer),
            Column("detail", Text, nullable=False),
            Column("prev_hash", String(64), nullable=False),
            Column("hash", String(64), nullable=False),
            Index(None, "subject"),
            Index(None, "model"),
        ),
        Table(
            "audit_checkpoints",
            md,
            Column("seq", BigInteger, primary_key=True, autoincrement=False),
            Column("hash", String(64), nullable=False),
            Column("at", String(_TS), nullable=False),
            Column("public_key", String(100), nullable=False),
            Column("signature", String(200), nullable=False),
        ),
        Table(
            "audit_subjects",
            md,
            Column("subject", String(64), primary_key=True),
            Column("user_id", String(200), nullable=False, unique=True),
            Column("created_at", String(_TS), nullable=False),
        ),
        Table(
            "access_rules",
            md,
            Column("id", Integer, primary_key=True),
            Column("effect", String(8), nullable=False),
            Column("user_id", String(200), nullable=False),
            Column("models", String(200), nullable=False),
            Column("level", String(16), nullable=False),
            Column("actor", String(200), nullable=False),
            Column("at", String(_TS), nullable=False),
            UniqueConstraint("effect", "user_id", "models", "level"),
        ),
        Table(
            "consents",
            md,
            Column("id", Integer, primary_key=True),
            Column("user_id", String(200), nullable=False),
            Column("purpose", String(100), nullable=False),
            Column("granted_at", String(_TS), nullable=False),
            Column("withdrawn_at", String(_TS)),
            Column("source", String(200), nullable=False),
            Index(None, "user_id"),
        ),
        Table(
            "privacy_state",
            md,
            Column("key", String(100), primary_key=True),
            Column("value", Text, nullable=False),
            Column("updated_at", String(_TS), nullable=False),
        ),
    ]


def _m4_security(conn: Connection) -> None:
    """Audit chain, checkpoints, subjects, access rules, consents, privacy state (frozen)."""
    md = _migration_metadata()
    _security_tables(md)
    md.create_all(conn)


def _personalization_tables(md: MetaData) -> tuple[Table, Table, Table, Table]:
    """user_preferences, user_memory, personalized_responses and feedback (models.personalization).

    `feedback` has the columns the monitor reads (`at`, `category`, `model`, `version`, `kind`,
    `value`, `user_hash`; see models.monitoring.feedback): `kind` is rating (1-5 stars), thumbs
    (+1/-1), choice, regenerate or edit (`value` = share of the reply changed).
    """
    prefs = Table(
        "user_preferences",
        md,
        Column("user_id", String(200), primary_key=True),
        Column("data", JSON, nullable=False),
        Column("updated_at", String(_TS), nullable=False),
    )
    memory = Table(
        "user_memory",
        md,
        Column("id", Integer, primary_key=True),
        Column("user_id", String(200), nullable=False),
        Column("kind", String(32), nullable=False),
        Column("text", Text, nullable=False),
        Column("source", String(32), nullable=False),
        Column("created_at", String(_TS), nullable=False),
        Column("updated_at", String(_TS), nullable=False),
        Index(None, "user_id"),
    )
    responses = Table(
        "personalized_responses",
        md,
        Column("id", String(64), primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("user_id", String(200)),
        Column("category", String(64), nullable=False),
        Column("model", String(64), nullable=False),
        Column("version", String(64)),
        Column("personalization", String(64), nullable=False),
        Column("context", Text),
        Column("text", Text, nullable=False),
        Column("candidates", JSON, nullable=False),
        Column("scores", JSON, nullable=False),
        Column("chosen", Integer, nullable=False),
        Column("details", JSON),
        Index(None, "user_id", "at"),
    )
    feedback = Table(
        "feedback",
        md,
        Column("id", Integer, primary_key=True),
        Column("at", String(_TS), nullable=False),
        Column("category", String(64), nullable=False),
        Column("model", String(64), nullable=False),
        Column("version", String(64)),
        Column("kind", String(16), nullable=False),
        Column("value", Float),
        Column("user_hash", String(32)),
        Column("user_id", String(200)),
        Column("response_id", String(64)),
        Column("personalization", String(64)),
        Column("event", JSON, nullable=False),
        Index(None, "model", "at"),
        Index(None, "user_id"),
        Index(None, "response_id"),
    )
    return prefs, memory, responses, feedback


def _m5_personalization(conn: Connection) -> None:
    """User preferences, memory, personalized responses and feedback (frozen)."""
    md = _migration_metadata()
    _personalization_tables(md)
    md.create_all(conn)


def _api_keys_table(md: MetaData) -> Table:
    """Frozen DDL of migration 6: the server's API keys (companion.server.keys).

    Only a key's SHA-256 is stored (`key_hash`), with its first characters (`prefix`) so a user
    can tell keys apart; `revoked_at` set = the key no longer works."""
    return Table(
        "api_keys",
        md,
        Column("id", Integer, primary_key=True),
        Column("key_hash", String(64), nullable=False, unique=True),
        Column("prefix", String(16), nullable=False),
        Column("user_id", String(200), nullable=False),
        Column("name", String(100)),
        Column("created_at", String(_TS), nullable=False),
        Column("last_used_at", String(_TS)),
        Column("revoked_at", String(_TS)),
        Index(None, "user_id"),
    )


def _m6_api_keys(conn: Connection) -> None:
    """API keys of the HTTP server, stored hashed (frozen)."""
    md = _migration_metadata()
    _api_keys_table(md)
    md.create_all(conn)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _m1_initial),
    Migration(2, "version_tags_and_update_sources", _m2_versions),
    Migration(3, "generation_events_and_evaluation_runs", _m3_operations),
    Migration(4, "audit_access_consent_privacy", _m4_security),
    Migration(5, "personalization", _m5_personalization),
    Migration(6, "api_keys", _m6_api_keys),
]

# The current schema of migration 4's tables (frozen in `_security_tables` until a migration changes one).
audit_log, audit_checkpoints, audit_subjects, access_rules, consents, privacy_state = _security_tables(metadata)
# The current schema of migration 5's tables (frozen in `_personalization_tables` likewise).
user_preferences, user_memory, personalized_responses, feedback = _personalization_tables(metadata)
# The current schema of migration 6's table.
api_keys = _api_keys_table(metadata)


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
