"""API keys: each names one user; only the key's SHA-256 is stored (table `api_keys`, migration 6).

    key = create_key("ada", name="sillytavern")   # shown once: "ck-..."
    user_for_key(key)                               # "ada" (None for an unknown or revoked key)
    revoke_key(key_id)

A key is 32 random bytes (URL-safe base64) after the `ck-` prefix: with that much entropy a
plain SHA-256 is enough (no password stretching needed), and lookups are one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update

from models import db
from models.errors import CompanionError

__all__ = ["KEY_PREFIX", "ApiKey", "KeyError_", "create_key", "hash_key", "list_keys", "revoke_key", "user_for_key"]

KEY_PREFIX = "ck-"
_SHOWN = 10  # characters of the key kept in clear to tell keys apart ("ck-" + 7)


class KeyError_(CompanionError, ValueError):
    """An API key operation was refused (bad user name, unknown key id)."""


@dataclass(frozen=True)
class ApiKey:
    """One stored key (never the key itself)."""

    id: int
    prefix: str
    user: str
    name: str | None
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _engine(url: str | None = None) -> Any:
    return db.connect(url)


def create_key(user: str, name: str | None = None, *, url: str | None = None) -> tuple[str, ApiKey]:
    """A new key for `user`: returns the key (shown once) and its stored record."""
    from models.users import check_user_id

    try:
        check_user_id(user)
    except ValueError as exc:
        raise KeyError_(str(exc)) from None
    if name is not None and len(name) > 100:
        raise KeyError_("name: at most 100 characters")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = db.utc_now()
    with db.write_transaction(_engine(url)) as conn:
        key_id = conn.execute(
            insert(db.api_keys).values(
                key_hash=hash_key(key), prefix=key[:_SHOWN], user_id=user.strip(), name=name, created_at=now
            )
        ).inserted_primary_key[0]
    return key, ApiKey(int(key_id), key[:_SHOWN], user.strip(), name, now, None, None)


def user_for_key(key: str, *, url: str | None = None, touch: bool = True) -> str | None:
    """The user a live key names, or None (unknown, revoked, or not a key at all)."""
    if not isinstance(key, str) or not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    t = db.api_keys
    digest = hash_key(key)
    engine = _engine(url)
    with engine.connect() as conn:
        row = conn.execute(
            select(t.c.id, t.c.user_id, t.c.revoked_at, t.c.last_used_at).where(t.c.key_hash == digest)
        ).first()
    if row is None or row.revoked_at is not None:
        return None
    if touch and _stale(row.last_used_at):
        with db.write_transaction(engine) as conn:
            conn.execute(update(t).where(t.c.id == row.id).values(last_used_at=db.utc_now()))
    return str(row.user_id)


#: `last_used_at` is kept to this many seconds: a busy key would otherwise cost a database write
#: on every request (GitHub and cloud consoles show a key's last use as coarsely).
TOUCH_EVERY_S = 60.0


def _stale(last_used: str | None) -> bool:
    if not last_used:
        return True
    try:
        age = datetime.now(UTC) - datetime.fromisoformat(last_used)
    except ValueError:
        return True
    return age.total_seconds() >= TOUCH_EVERY_S


def list_keys(user: str | None = None, *, url: str | None = None) -> list[ApiKey]:
    """Every stored key (of `user` when given), oldest first."""
    t = db.api_keys
    query = select(t).order_by(t.c.id)
    if user is not None:
        query = query.where(t.c.user_id == user)
    with _engine(url).connect() as conn:
        rows = conn.execute(query).all()
    return [ApiKey(r.id, r.prefix, r.user_id, r.name, r.created_at, r.last_used_at, r.revoked_at) for r in rows]


def revoke_key(key_id: int, *, url: str | None = None) -> ApiKey:
    """Revoke the key with this id (idempotent); returns its record."""
    t = db.api_keys
    with db.write_transaction(_engine(url)) as conn:
        row = conn.execute(select(t).where(t.c.id == key_id)).first()
        if row is None:
            raise KeyError_(f"no API key with id {key_id} (see `companion users key list`)")
        if row.revoked_at is None:
            conn.execute(update(t).where(t.c.id == key_id).values(revoked_at=db.utc_now()))
    return next(k for k in list_keys(url=url) if k.id == key_id)
