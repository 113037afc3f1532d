"""The version index: versions, aliases, alias history, tags and catalog state in the metadata DB.

The store's folders are the truth of *which* versions exist: each one is published whole by one
rename and carries its own `version.json` (notes, author, time, lineage). This index is what
queries use and where everything mutable lives:

    model_versions   one row per published version (a cache of its version.json + manifest hash)
    aliases          alias → version, per model ("current", "production", any name)
    alias_history    every alias move: who, when, from, to, why
    version_tags     key/value labels on a version
    update_sources   the newest catalog seen per update source (rollback and freeze protection)

Each alias move and its history row are written in one transaction (`move_alias`), so a crash
leaves either both or neither. Read-then-write transactions hold the model's write lock: SQLite's
`BEGIN IMMEDIATE` (`db.write_transaction`), plus a transaction-scoped advisory lock per model on
PostgreSQL, where transactions are READ COMMITTED.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, delete, insert, select, text, update

from models import db
from models.errors import VersionError
from models.store import parse_version

__all__ = ["ANY", "AliasMove", "CatalogSeen", "VersionIndex"]

ANY: Any = object()  # `move_alias(expect=ANY)`: move whatever the alias points at now

_ALIAS_SQL = "SELECT version FROM aliases WHERE category = ? AND name = ? AND alias = ?"
_ALIAS_QUERY = select(db.aliases.c.version).where(
    and_(
        db.aliases.c.category == bindparam("category"),
        db.aliases.c.name == bindparam("name"),
        db.aliases.c.alias == bindparam("alias"),
    )
)


@dataclass(frozen=True)
class AliasMove:
    """One row of an alias's history."""

    category: str
    name: str
    alias: str
    from_version: str | None
    to_version: str
    actor: str
    reason: str | None
    at: str


@dataclass(frozen=True)
class CatalogSeen:
    """The newest catalog accepted from one source."""

    source: str
    catalog_version: int
    digest: str
    expires: str
    seen_at: str


def _model_where(table: Any, category: str, name: str) -> Any:
    return and_(table.c.category == category, table.c.name == name)


_SHARED: dict[str, VersionIndex] = {}
_SHARED_LOCK = threading.Lock()


class VersionIndex:
    """Typed queries over the version tables of one database."""

    @classmethod
    def shared(cls, url: str | None = None) -> VersionIndex:
        """One index per database URL and process (default: `db.default_url()`), for hot paths."""
        key = url or db.default_url()
        engine = db.connect(key)
        with _SHARED_LOCK:
            index = _SHARED.get(key)
            if index is None or index.engine is not engine:  # new, or the engine was disposed
                index = _SHARED[key] = cls(engine)
        return index

    def __init__(self, engine: Engine | None = None, url: str | None = None) -> None:
        self.engine = engine if engine is not None else db.connect(url)
        database = self.engine.url.database
        is_file = self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self._sqlite_path = database if is_file else None
        self._local = threading.local()
        # Alias reads need no transaction: one round trip instead of BEGIN, SELECT, ROLLBACK.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def writing(self, *lock_keys: str) -> Iterator[Connection]:
        """A write transaction holding the write lock (and per-key advisory locks on PostgreSQL)."""
        with db.write_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                for key in sorted(set(lock_keys)):
                    key_id = zlib.crc32(key.encode()) - (1 << 31)  # a stable signed 32-bit key
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key_id})
            yield conn

    # -- versions -------------------------------------------------------------------------

    def rows(self, category: str, name: str) -> list[dict[str, Any]]:
        """Every registered version of a model, oldest first by semver."""
        query = select(db.model_versions).where(_model_where(db.model_versions, category, name))
        with self.engine.connect() as conn:
            found = [dict(r) for r in conn.execute(query).mappings()]
        return sorted(found, key=lambda r: parse_version(r["version"]))

    def row(self, category: str, name: str, version: str, conn: Connection | None = None) -> dict[str, Any] | None:
        query = select(db.model_versions).where(
            _model_where(db.model_versions, category, name), db.model_versions.c.version == version
        )
        if conn is not None:
            found = conn.execute(query).mappings().first()
        else:
            with self.engine.connect() as c:
                found = c.execute(query).mappings().first()
        return dict(found) if found is not None else None

    def versions(self, conn: Connection, category: str, name: str) -> set[str]:
        query = select(db.model_versions.c.version).where(_model_where(db.model_versions, category, name))
        return set(conn.scalars(query))

    @staticmethod
    def insert_version(conn: Connection, row: dict[str, Any]) -> None:
        conn.execute(insert(db.model_versions).values(**row))

    @staticmethod
    def delete_version(conn: Connection, category: str, name: str, version: str) -> None:
        """Forget a version (its tags too); refused while an alias points at it."""
        pointing = conn.scalars(
            select(db.aliases.c.alias).where(_model_where(db.aliases, category, name), db.aliases.c.version == version)
        ).all()
        if pointing:
            raise VersionError(
                f"{category}/{name} {version} is still the target of alias(es) {', '.join(sorted(pointing))}: "
                "move them to another version first"
            )
        for table in (db.version_tags, db.model_versions):
            conn.execute(delete(table).where(_model_where(table, category, name), table.c.version == version))

    def models(self) -> list[tuple[str, str]]:
        query = select(db.model_versions.c.category, db.model_versions.c.name).distinct()
        with self.engine.connect() as conn:
            return sorted((r[0], r[1]) for r in conn.execute(query))

    # -- aliases --------------------------------------------------------------------------

    def alias(self, category: str, name: str, alias: str = "current") -> str | None:
        """The version `alias` points at, or None: one indexed read (the manager's warm path).

        On SQLite this is a single statement on a per-thread read-only connection (a few
        microseconds); elsewhere one autocommit query on a pooled connection.
        """
        if self._sqlite_path is not None:
            row = self._reader().execute(_ALIAS_SQL, (category, name, alias)).fetchone()
            return row[0] if row is not None else None
        with self._autocommit.connect() as conn:
            return conn.execute(_ALIAS_QUERY, {"category": category, "name": name, "alias": alias}).scalar()

    def _reader(self) -> sqlite3.Connection:
        """This thread's autocommit SQLite connection for alias reads (reopened after a fork)."""
        held = getattr(self._local, "conn", None)
        if held is not None and held[0] == os.getpid():
            return held[1]
        conn = sqlite3.connect(str(self._sqlite_path), isolation_level=None)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA query_only=ON")
        self._local.conn = (os.getpid(), conn)
        return conn

    def aliases(self, category: str, name: str) -> dict[str, str]:
        query = select(db.aliases.c.alias, db.aliases.c.version).where(_model_where(db.aliases, category, name))
        with self.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(query)}

    @staticmethod
    def move_alias(
        conn: Connection,
        category: str,
        name: str,
        alias: str,
        version: str,
        *,
        actor: str,
        reason: str | None,
        expect: Any = ANY,
    ) -> str | None:
        """Point `alias` at `version` and record the move; return the version it pointed at.

        With `expect`, the move happens only if the alias still points at `expect` (None: does
        not exist yet), else VersionError: a compare-and-swap for callers that checked earlier.
        A move to the version it already points at records nothing.
        """
        current = conn.execute(_ALIAS_QUERY, {"category": category, "name": name, "alias": alias}).scalar()
        if expect is not ANY and current != expect:
            raise VersionError(
                f"alias {alias!r} of {category}/{name} moved to {current} while this operation expected "
                f"{expect}: someone else changed it; check `companion models alias {category}/{name}` and retry"
            )
        if current == version:
            return current
        now = db.utc_now()
        if current is None:
            conn.execute(
                insert(db.aliases).values(category=category, name=name, alias=alias, version=version, updated_at=now)
            )
        else:
            conn.execute(
                update(db.aliases)
                .where(_model_where(db.aliases, category, name), db.aliases.c.alias == alias)
                .values(version=version, updated_at=now)
            )
        conn.execute(
            insert(db.alias_history).values(
                category=category,
                name=name,
                alias=alias,
                from_version=current,
                to_version=version,
                actor=actor,
                reason=reason,
                at=now,
            )
        )
        return current

    def history(self, category: str, name: str, alias: str | None = None) -> list[AliasMove]:
        """Every recorded alias move of a model (one alias, or all), oldest first."""
        table = db.alias_history
        query = select(table).where(_model_where(table, category, name)).order_by(table.c.id)
        if alias is not None:
            query = query.where(table.c.alias == alias)
        with self.engine.connect() as conn:
            return [
                AliasMove(r.category, r.name, r.alias, r.from_version, r.to_version, r.actor, r.reason, r.at)
                for r in conn.execute(query)
            ]

    # -- tags -----------------------------------------------------------------------------

    def set_tag(self, category: str, name: str, version: str, key: str, value: str, actor: str) -> None:
        table = db.version_tags
        with self.writing(f"{category}/{name}") as conn:
            if self.row(category, name, version, conn) is None:
                raise VersionError(f"{category}/{name} has no version {version} to tag")
            where = and_(_model_where(table, category, name), table.c.version == version, table.c.key == key)
            conn.execute(delete(table).where(where))
            conn.execute(
                insert(table).values(
                    category=category,
                    name=name,
                    version=version,
                    key=key,
                    value=value,
                    actor=actor,
                    updated_at=db.utc_now(),
                )
            )

    def tags(self, category: str, name: str) -> dict[str, dict[str, str]]:
        """version → {key: value}."""
        table = db.version_tags
        query = select(table.c.version, table.c.key, table.c.value).where(_model_where(table, category, name))
        out: dict[str, dict[str, str]] = {}
        with self.engine.connect() as conn:
            for version, key, value in conn.execute(query):
                out.setdefault(version, {})[key] = value
        return out

    # -- update catalogs ------------------------------------------------------------------

    def catalog_seen(self, source: str, conn: Connection | None = None) -> CatalogSeen | None:
        query = select(db.update_sources).where(db.update_sources.c.source == source)
        if conn is not None:
            row = conn.execute(query).first()
        else:
            with self.engine.connect() as c:
                row = c.execute(query).first()
        if row is None:
            return None
        return CatalogSeen(row.source, int(row.catalog_version), row.digest, row.expires, row.seen_at)

    @staticmethod
    def record_catalog(conn: Connection, seen: CatalogSeen, known: bool) -> None:
        table = db.update_sources
        values = {
            "catalog_version": seen.catalog_version,
            "digest": seen.digest,
            "expires": seen.expires,
            "seen_at": seen.seen_at,
        }
        if known:
            conn.execute(update(table).where(table.c.source == seen.source).values(**values))
        else:
            conn.execute(insert(table).values(source=seen.source, **values))
