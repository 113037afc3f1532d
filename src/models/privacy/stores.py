"""Where a user's data lives, for export and erasure (GDPR Art. 15, 17, 20; CCPA 1798.100, .105).

A *user data store* can list (`export`) and remove (`erase`) everything it holds about one user.
Built in:

* `DatabaseStore`: every table in the metadata database with a `user_id` column (found by
  reflection, so tables other features add are covered without registering), plus tables with
  a `user_hash` column keyed by `models.monitoring.events.pseudonymize` (generation events), and
  the audit chain's subject map (the rows stay, unnamed: see `models.audit`).
* `FolderStore`: `COMPANION_HOME/users/<user>/` — the per-user folder for profile, preferences,
  memory, chats, raw collected data and per-user adapters (with their training data).

Other features register theirs with `register_store(store)`: an object with `name`,
`export(user_id) -> dict` and `erase(user_id) -> dict` (counts of what was removed).
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import JSON, MetaData, Table, delete, inspect, select

from models import db
from models.errors import PrivacyError
from models.users import check_user_id, user_folder

__all__ = [
    "DatabaseStore",
    "FolderStore",
    "UserDataStore",
    "check_user_id",
    "legacy_user_folder",
    "register_store",
    "stores",
    "user_folder",
]


def legacy_user_folder(user_id: str, home: Path | None = None) -> Path | None:
    """`COMPANION_HOME/users/<user_id>/`, where the privacy layer once put files, if the id is a
    plain name that can be one (exported and erased with the rest; nothing new is written there)."""
    from models.home import companion_home

    if not re.fullmatch(r"[A-Za-z0-9_.@+-]{1,200}", user_id) or user_id in (".", ".."):
        return None
    return (home or companion_home()) / "users" / user_id


class UserDataStore(Protocol):
    name: str

    def export(self, user_id: str) -> dict[str, Any]: ...

    def erase(self, user_id: str) -> dict[str, int]: ...


def _jsonable(value: Any, json_column: bool = False) -> Any:
    """A database value for the export: bytes as base64, values encrypted at rest decrypted
    (the person asking is owed their data, not ciphertext)."""
    from models.privacy.crypto import unseal

    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return unseal(value, as_json=json_column)


class DatabaseStore:
    """Rows about the user in every table of the metadata database."""

    name = "database"

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def tables(self) -> list[tuple[Table, str]]:
        engine = db.connect(self.url)
        reflected = MetaData()
        names = inspect(engine).get_table_names()
        out = []
        for name in sorted(names):
            if name in ("audit_log", "audit_checkpoints"):
                continue  # the chain is immutable; its subject map is handled below
            table = Table(name, reflected, autoload_with=engine)
            for col in ("user_id", "user_hash"):
                if col in table.c:
                    out.append((table, col))
        return out

    @staticmethod
    def _key(column: str, user_id: str) -> str | None:
        if column == "user_id":
            return user_id
        try:
            from models.monitoring.events import pseudonymize
        except ImportError:  # pragma: no cover - monitoring not installed
            return None
        return pseudonymize(user_id)

    def export(self, user_id: str) -> dict[str, Any]:
        engine = db.connect(self.url)
        out: dict[str, Any] = {}
        with engine.connect() as conn:
            for table, col in self.tables():
                key = self._key(col, user_id)
                if key is None or table.name == "audit_subjects":
                    continue
                rows = conn.execute(select(table).where(table.c[col] == key)).mappings().all()
                if rows:
                    json_columns = {c.name for c in table.c if isinstance(c.type, JSON)}
                    out[table.name] = [{k: _jsonable(v, k in json_columns) for k, v in r.items()} for r in rows]
        from models.audit import AuditLog

        audit = AuditLog(self.url)
        out["audit_log"] = [r.to_json() for r in audit.show(user=user_id)]
        return out

    def erase(self, user_id: str) -> dict[str, int]:
        engine = db.connect(self.url)
        counts: dict[str, int] = {}
        with db.write_transaction(engine) as conn:
            for table, col in self.tables():
                key = self._key(col, user_id)
                if key is None:
                    continue
                n = conn.execute(delete(table).where(table.c[col] == key)).rowcount
                if n:
                    counts[table.name] = n
        if engine.dialect.name == "sqlite":
            _vacuum(engine)
        return counts


def _vacuum(engine: Any) -> None:
    """Rewrite the SQLite file so deleted rows leave no trace in free pages or the WAL."""
    raw = engine.raw_connection()  # outside SQLAlchemy's transaction: VACUUM cannot run inside one
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.execute("VACUUM")
        cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        cursor.close()
    finally:
        raw.close()


class FolderStore:
    """The user's folder under COMPANION_HOME/users/."""

    name = "files"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home

    def _folders(self, user_id: str) -> list[Path]:
        found = [user_folder(user_id, self.home), legacy_user_folder(user_id, self.home)]
        return [f for f in dict.fromkeys(found) if f is not None and f.is_dir() and not f.is_symlink()]

    def export(self, user_id: str) -> dict[str, Any]:
        from models.privacy.crypto import read_user_file

        folders = self._folders(user_id)
        if not folders:
            return {}
        files = {}
        for folder in folders:
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
                rel = path.relative_to(folder).as_posix()
                data = read_user_file(path, self.home)  # decrypted: the export is for the person, not a backup
                try:
                    files[rel] = {"text": data.decode("utf-8")}
                except UnicodeDecodeError:
                    files[rel] = {"base64": base64.b64encode(data).decode()}
        return {"folder": str(folders[0]), "files": files}

    def erase(self, user_id: str) -> dict[str, int]:
        count = 0
        for folder in self._folders(user_id):
            files = [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]
            for path in files:  # overwrite before unlinking: the bytes do not linger in the file's blocks
                with contextlib.suppress(OSError), path.open("r+b") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(0)
                    f.write(b"\0" * size)
                    f.flush()
                    os.fsync(f.fileno())
            trash = folder.with_name(f".erasing-{folder.name}-{os.getpid()}")
            os.replace(folder, trash)  # gone from its place at once, even if the removal below is cut short
            shutil.rmtree(trash)
            count += len(files)
        return {"files": count} if count else {}


_EXTRA: list[UserDataStore] = []


def register_store(store: UserDataStore) -> None:
    """Add a feature's own user data store (export and erasure will include it)."""
    if not all(hasattr(store, a) for a in ("name", "export", "erase")):
        raise PrivacyError(f"{store!r} is not a user data store: it needs name, export(user_id), erase(user_id)")
    _EXTRA.append(store)


def stores(url: str | None = None, home: Path | None = None) -> list[UserDataStore]:
    return [DatabaseStore(url), FolderStore(home), *_EXTRA]
