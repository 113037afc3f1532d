"""Per-user personalization state in the metadata database and in `COMPANION_HOME/users/`.

Database (migration 5, `models.db`): `user_preferences`, `user_memory`,
`personalized_responses` (every personalized answer with its candidates and scores, so later
feedback can name it) and `feedback` (what the monitor reads). Each write is one transaction.

Files: a user's learner for a personalization model lives in
`COMPANION_HOME/users/<user key>/<model>/learner.{safetensors,json}` (atomic writes).

At rest (`privacy.encrypt_at_rest`, on by default): the free-text and JSON columns of these
tables (`SEALED`) and the learner files are Fernet-encrypted with the key in
`COMPANION_HOME/keys/data.key` (`models.privacy.crypto`); ids, times, model names and the
monitor's numbers stay readable. Reads accept values written in the clear as well.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, text, update

from models import db
from models.context import current
from models.users import check_user_id, user_folder

__all__ = [
    "delete_preferences",
    "erase_user",
    "export_user",
    "flush",
    "get_preferences",
    "get_response",
    "learner_dir",
    "list_feedback",
    "log_response",
    "put_preferences",
    "seal_stored",
    "user_dir",
]


#: Columns encrypted at rest, per table: True for JSON values, False for text.
SEALED: dict[str, dict[str, bool]] = {
    "user_preferences": {"data": True},
    "user_memory": {"text": False},
    "personalized_responses": {"context": False, "text": False, "candidates": True, "scores": True, "details": True},
    "feedback": {"event": True},
    "chats": {"title": False, "meta": True},
    "chat_messages": {"swipes": True, "details": True},
}


def seal_row(table: str, row: dict[str, Any]) -> dict[str, Any]:
    """`row` as written: its `SEALED` columns encrypted while encryption is on."""
    from models.privacy.crypto import encryption_enabled, seal

    columns = SEALED[table]
    if not encryption_enabled():
        return row
    return {k: seal(v, as_json=columns[k], enabled=True) if k in columns else v for k, v in row.items()}


def open_row(table: str, row: Any) -> dict[str, Any]:
    """A read row (a mapping) with its `SEALED` columns decrypted (clear values pass through)."""
    from models.privacy.crypto import unseal

    columns = SEALED[table]
    return {k: unseal(v, as_json=columns[k]) if k in columns else v for k, v in dict(row).items()}


_ENGINES: dict[tuple[str, str], Any] = {}
_CACHE: dict[tuple[str, str, str], tuple[float, Any]] = {}
#: Seconds a process reuses a user's preferences or facts it read (its own writes clear them at once).
CACHE_TTL = 2.0


def _home_key() -> tuple[str, str]:
    return current().key


def home_engine() -> Any:
    """`db.connect()` for the active home, without re-resolving its path on every call."""
    key = _home_key()
    engine = _ENGINES.get(key)
    if engine is None or engine is not db.get_engine(engine.url.render_as_string(hide_password=False)):
        engine = _ENGINES[key] = db.connect()
    return engine


def cached(kind: str, user: str, load: Any) -> Any:
    """`load()` of a user's `kind` of state, reused for `CACHE_TTL` seconds in this process."""
    key = (*_home_key(), f"{kind}:{user}")
    now = time.monotonic()
    hit = _CACHE.get(key)
    if hit is not None and now - hit[0] < CACHE_TTL:
        return hit[1]
    value = load()
    _CACHE[key] = (now, value)
    return value


def forget_cached(kind: str, user: str) -> None:
    _CACHE.pop((*_home_key(), f"{kind}:{user}"), None)


def _check_user(user: str) -> str:
    return check_user_id(user)


# --- preferences -------------------------------------------------------------------------------


def put_preferences(user: str, data: dict[str, Any]) -> None:
    _check_user(user)
    forget_cached("prefs", user)
    table = db.user_preferences
    sealed = seal_row(table.name, {"data": data})["data"]
    with db.write_transaction(home_engine()) as conn:
        db.upsert(conn, table, {"user_id": user}, {"data": sealed, "updated_at": db.utc_now()})
    forget_cached("prefs", user)


def _row_lock_key(kind: str, user: str) -> int:
    """A PostgreSQL advisory-lock key for one user's row of `kind` (a signed 64-bit int)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{kind}:{user}".encode()).digest()[:8], "big", signed=True)


def update_preferences(user: str, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
    """Read, change and write `user`'s preferences in one transaction that holds the user's row
    (SQLite: the write lock from `BEGIN IMMEDIATE`; PostgreSQL: an advisory lock per user, which
    also covers the first insert). Concurrent merges all land; an exception in `change` rolls
    back and changes nothing. Returns what was stored."""
    _check_user(user)
    forget_cached("prefs", user)
    table = db.user_preferences
    with db.write_transaction(home_engine()) as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _row_lock_key("prefs", user)})
        found = conn.scalar(select(table.c.data).where(table.c.user_id == user))
        current = open_row(table.name, {"data": found})["data"] if found is not None else None
        data = change(dict(current) if current is not None else None)
        sealed = seal_row(table.name, {"data": data})["data"]
        if found is None:
            conn.execute(insert(table).values(user_id=user, data=sealed, updated_at=db.utc_now()))
        else:
            conn.execute(update(table).where(table.c.user_id == user).values(data=sealed, updated_at=db.utc_now()))
    forget_cached("prefs", user)
    return data


def get_preferences(user: str) -> dict[str, Any] | None:
    table = db.user_preferences

    def load() -> dict[str, Any] | None:
        with home_engine().connect() as conn:
            found = conn.scalar(select(table.c.data).where(table.c.user_id == user))
        return open_row(table.name, {"data": found})["data"] if found is not None else None

    found = cached("prefs", user, load)
    return dict(found) if found is not None else None


def delete_preferences(user: str) -> bool:
    forget_cached("prefs", user)
    table = db.user_preferences
    with db.write_transaction(home_engine()) as conn:
        n = conn.execute(delete(table).where(table.c.user_id == user)).rowcount
    forget_cached("prefs", user)
    return n > 0


# --- responses and feedback --------------------------------------------------------------------


class _ResponseLog:
    """Writes logged responses on a background thread, off the reply's critical path.

    A reply's id is made here (a UUID), so the caller gets it at once; `flush()` waits until
    every queued row is committed (feedback and erasure flush first, and so does exit).
    """

    def __init__(self) -> None:
        import queue
        import threading

        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    def put(self, url: str, row: dict[str, Any]) -> None:
        import atexit
        import threading

        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="companion-response-log", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
        self._queue.put((url, row))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is not None:
                    url, row = item
                    with db.write_transaction(db.connect(url)) as conn:  # the URL the reply was made under
                        conn.execute(insert(db.personalized_responses).values(**row))
            except Exception as exc:  # reported by flush(), never lost silently
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued response is written; raise if one failed."""
        self._queue.join()
        if self.errors:
            errors, self.errors = self.errors, []
            raise RuntimeError(f"could not log {len(errors)} response(s): {errors[0]}")


_LOG = _ResponseLog()
db.before_dispose(_LOG.flush)  # queued responses are written before the pools close


def flush() -> None:
    """Wait for queued response logs (see `log_response(background=True)`)."""
    _LOG.flush()


def log_response(
    *,
    user: str | None,
    category: str,
    model: str,
    version: str | None,
    personalization: str,
    context: str | None,
    text: str,
    candidates: list[str],
    scores: list[float],
    chosen: int,
    details: dict[str, Any] | None = None,
    background: bool = False,
) -> str:
    """Record one personalized answer; returns its id (what feedback refers to). With
    `background`, the row is written by a background thread (`flush()` waits for it)."""
    response_id = f"pr-{uuid.uuid4().hex}"
    row = {
        "id": response_id,
        "at": db.utc_now(),
        "user_id": user,
        "category": category,
        "model": model,
        "version": version,
        "personalization": personalization,
        "context": context,
        "text": text,
        "candidates": candidates,
        "scores": [round(float(s), 6) for s in scores],
        "chosen": chosen,
        "details": details or {},
    }
    row = seal_row("personalized_responses", row)  # here, not on the writer thread: the caller's home
    if background:
        _LOG.put(home_engine().url.render_as_string(hide_password=False), row)
        return response_id
    with db.write_transaction(home_engine()) as conn:
        conn.execute(insert(db.personalized_responses).values(**row))
    return response_id


def get_response(response_id: str) -> dict[str, Any] | None:
    flush()
    table = db.personalized_responses
    with home_engine().connect() as conn:
        row = conn.execute(select(table).where(table.c.id == response_id)).mappings().first()
    return open_row(table.name, row) if row is not None else None


def insert_feedback(row: dict[str, Any]) -> int:
    row = seal_row("feedback", row)
    with db.write_transaction(home_engine()) as conn:
        result = conn.execute(insert(db.feedback).values(**row))
        return int(result.inserted_primary_key[0])


def list_feedback(user: str | None = None, model: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Recorded feedback rows, newest first."""
    flush()
    table = db.feedback
    query = select(table).order_by(table.c.id.desc()).limit(limit)
    if user is not None:
        query = query.where(table.c.user_id == user)
    if model is not None:
        query = query.where(table.c.model == model)
    with home_engine().connect() as conn:
        return [open_row(table.name, r) for r in conn.execute(query).mappings()]


def count_rows(table_name: str) -> int:
    flush()
    table = db.metadata.tables[table_name]
    with home_engine().connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(table)) or 0)


# --- files ---------------------------------------------------------------------------------------


def user_dir(user: str, create: bool = False) -> Path:
    folder = user_folder(user)
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def learner_dir(user: str, model: str) -> Path:
    from models.store import validate_name

    return user_dir(user) / validate_name(model)


def erase_user(user: str) -> dict[str, int]:
    """Delete everything personalization keeps about `user`: preferences, memory, responses,
    feedback (one transaction) and learner files. Returns what was removed."""
    import shutil

    flush()
    forget_cached("prefs", user)
    forget_cached("memory", user)
    removed: dict[str, int] = {}
    with db.write_transaction(home_engine()) as conn:
        for table in (db.user_preferences, db.user_memory, db.personalized_responses, db.feedback):
            removed[table.name] = conn.execute(delete(table).where(table.c.user_id == user)).rowcount
    forget_cached("prefs", user)
    forget_cached("memory", user)
    folder = user_dir(user)
    removed["learner_files"] = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
    if folder.exists():
        shutil.rmtree(folder)
    return removed


def seal_stored() -> dict[str, int]:
    """Encrypt what was written in the clear (before `privacy.encrypt_at_rest` was on): every
    `SEALED` value that is not yet a token, in one transaction, and every user's learner files.
    Returns how many rows (per table) and files were sealed. PrivacyError if the setting is off."""
    from models.errors import PrivacyError
    from models.privacy.crypto import FERNET_PREFIX, encryption_enabled, is_encrypted, seal, write_encrypted

    if not encryption_enabled():
        raise PrivacyError("privacy.encrypt_at_rest is off in config.yaml: turn it on before sealing stored data")
    token = FERNET_PREFIX.decode()
    flush()
    counts: dict[str, int] = {}
    with db.write_transaction(home_engine()) as conn:
        for name, columns in SEALED.items():
            table = db.metadata.tables[name]
            (key,) = table.primary_key.columns
            rows = list(conn.execute(select(table)).mappings())
            n = 0
            for row in rows:
                clear = {c: row[c] for c in columns if row[c] is not None and not str(row[c]).startswith(token)}
                if clear:
                    sealed = {c: seal(v, as_json=columns[c], enabled=True) for c, v in clear.items()}
                    conn.execute(update(table).where(key == row[key.name]).values(**sealed))
                    n += 1
            counts[name] = n
    files = 0
    from models.home import companion_home

    users = companion_home() / "users"
    for path in sorted(users.glob("*/*/learner.*")) if users.is_dir() else []:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if not is_encrypted(data):
            write_encrypted(path, data)
            files += 1
    counts["learner_files"] = files
    _CACHE.clear()
    return counts


def export_user(user: str) -> dict[str, Any]:
    """Everything personalization keeps about `user`, as JSON-ready data (for data-subject access)."""
    from models.personalization.memory import UserMemory

    flush()
    engine = home_engine()
    with engine.connect() as conn:
        responses = [
            open_row("personalized_responses", r)
            for r in conn.execute(
                select(db.personalized_responses).where(db.personalized_responses.c.user_id == user)
            ).mappings()
        ]
        feedback = [
            open_row("feedback", r)
            for r in conn.execute(select(db.feedback).where(db.feedback.c.user_id == user)).mappings()
        ]
    learners = {}
    folder = user_dir(user)
    if folder.exists():
        import json

        from models.privacy.crypto import read_user_file

        for meta in sorted(folder.glob("*/learner.json")):
            learners[meta.parent.name] = json.loads(read_user_file(meta).decode("utf-8"))
    return {
        "format": "companion-user-export/1",
        "user": user,
        "preferences": get_preferences(user),
        "memory": UserMemory(user).export()["facts"],
        "responses": responses,
        "feedback": feedback,
        "learners": learners,
    }
