"""The numbered schema migrations: how a database comes to `models.schema`'s tables.

`models.db.migrate` runs them (re-exported there).

Adding a migration
------------------
1. Write `def _m2_events(conn: Connection) -> None` that creates or alters what it needs with
   frozen DDL (`Table(...)` on its own `_migration_metadata()`, or `conn.execute(text(...))`
   for an ALTER). Never create from the module-level `metadata`: a later migration may change
   those definitions, and a fresh database replays every migration in order. While tables
   stay as a migration first created them, one frozen function in `models.schema`
   (`version_tables(md)`, ...) builds them both for the migration and for `metadata`; when a later migration changes a
   table, `metadata` gets its own definition and the frozen function stays as it was.
2. Append `Migration(2, "events", _m2_events)` to `MIGRATIONS`. Numbers run 1, 2, 3, ... with
   no gaps; never edit, reorder or renumber a migration that has shipped.
3. Update `models.schema.metadata` (the current schema that queries use) to match the schema after it;
   `tests/test_db.py` checks that a migrated database matches `metadata`.

Each migration runs in its own transaction with the migration lock held (SQLite:
`BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory lock) and re-checks
`schema_migrations` inside it, so concurrent `migrate` calls from several processes apply
each migration exactly once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Column, Connection, MetaData, String, Table, text

from models.schema import (
    NAMING,
    api_keys_table,
    catalog_tables,
    chat_tables,
    operations_tables,
    personalization_tables,
    security_tables,
    session_table,
    version_tables,
)

__all__ = ["MIGRATIONS", "Migration"]


@dataclass(frozen=True)
class Migration:
    """One numbered schema change; `up` runs inside a transaction holding the migration lock."""

    number: int
    name: str
    up: Callable[[Connection], None]


def _migration_metadata() -> MetaData:
    """A throwaway MetaData for the frozen table definitions inside one migration."""
    return MetaData(naming_convention=NAMING)


def _m1_initial(conn: Connection) -> None:
    """model_versions, aliases and alias_history."""
    md = _migration_metadata()
    version_tables(md)
    md.create_all(conn)


def _m2_versions(conn: Connection) -> None:
    """version_tags and update_sources."""
    md = _migration_metadata()
    # The referenced table, as far as the foreign key needs it (it exists since migration 1).
    Table("model_versions", md, *(Column(c, String(64)) for c in ("category", "name", "version")))
    md.create_all(conn, tables=list(catalog_tables(md)))


def _m3_operations(conn: Connection) -> None:
    """generation_events and evaluation_runs (models.monitoring), as first shipped (frozen)."""
    md = _migration_metadata()
    operations_tables(md)
    md.create_all(conn)


def _m4_security(conn: Connection) -> None:
    """Audit chain, checkpoints, subjects, access rules, consents, privacy state (frozen)."""
    md = _migration_metadata()
    security_tables(md)
    md.create_all(conn)


def _m5_personalization(conn: Connection) -> None:
    """User preferences, memory, personalized responses and feedback (frozen)."""
    md = _migration_metadata()
    personalization_tables(md)
    md.create_all(conn)


def _m6_api_keys(conn: Connection) -> None:
    """API keys of the HTTP server, stored hashed (frozen)."""
    md = _migration_metadata()
    api_keys_table(md)
    md.create_all(conn)


def _m7_audit_bindings(conn: Connection) -> None:
    """Issue 15: a salt per audit subject (the chain binds each row to its subject's user through
    sha256(salt, subject, user id); erasure deletes the salt with the mapping) and the interval
    each checkpoint was made under (verify requires one at every interval)."""
    conn.execute(text("ALTER TABLE audit_subjects ADD COLUMN salt VARCHAR(32)"))
    conn.execute(text("ALTER TABLE audit_checkpoints ADD COLUMN every INTEGER"))


def _m8_chats(conn: Connection) -> None:
    """Saved conversations and their messages (frozen)."""
    md = _migration_metadata()
    chat_tables(md)
    md.create_all(conn)


def _m9_personality_sessions(conn: Connection) -> None:
    """Personality sessions in the database, for replicas (frozen)."""
    md = _migration_metadata()
    session_table(md)
    md.create_all(conn)


MIGRATIONS: list[Migration] = [
    Migration(1, "initial", _m1_initial),
    Migration(2, "version_tags_and_update_sources", _m2_versions),
    Migration(3, "generation_events_and_evaluation_runs", _m3_operations),
    Migration(4, "audit_access_consent_privacy", _m4_security),
    Migration(5, "personalization", _m5_personalization),
    Migration(6, "api_keys", _m6_api_keys),
    Migration(7, "audit_subject_bindings", _m7_audit_bindings),
    Migration(8, "chats", _m8_chats),
    Migration(9, "personality_sessions", _m9_personality_sessions),
]
