"""User ids: the one place that says what a user id may be and where a user's files live.

Every layer that stores something about a user (API keys, preferences, memory, feedback,
learned profiles, privacy exports) validates the id here and finds the user's folder here, so
anything stored under an id can be exported and erased under the same id (issue 15: a key for
"Ada Lovelace" stored data that erasure then refused, and learned profiles lived in a folder
the privacy layer never looked in).

A user id is any text of 1-200 characters with no control characters and no surrounding
spaces ("Ada Lovelace", "ada@example.com", "discord:1234" are all fine). On disk a user's
folder is `COMPANION_HOME/users/<slug>-<hash>`: a readable slug plus a hash of the exact id,
so no id can name a path (`..`, `/`) and two ids never share a folder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from models.errors import PrivacyError

__all__ = ["MAX_USER_ID", "check_user_id", "user_folder", "user_key"]

MAX_USER_ID = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SLUG = re.compile(r"[^a-z0-9_.-]+")  # the slug personalization folders always had


def check_user_id(user_id: object) -> str:
    """`user_id` if it is a valid user id, else a `PrivacyError` (a `ValueError`) saying why."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise PrivacyError(f"user id: expected a non-empty string, got {user_id!r}")
    if len(user_id) > MAX_USER_ID:
        raise PrivacyError(f"user id: at most {MAX_USER_ID} characters, got {len(user_id)}")
    if user_id != user_id.strip():
        raise PrivacyError(f"user id {user_id!r}: no spaces at the start or end")
    if _CONTROL.search(user_id):
        raise PrivacyError(f"user id {user_id!r}: no control characters")
    return user_id


def user_key(user_id: str) -> str:
    """The folder name of a user id: a readable slug plus a short hash of the exact id."""
    check_user_id(user_id)
    slug = _SLUG.sub("-", user_id.lower()).strip("-.")[:40] or "user"
    digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:10]
    return f"{slug}-{digest}"


def user_folder(user_id: str, home: Path | None = None) -> Path:
    """`COMPANION_HOME/users/<slug>-<hash>/`: where every per-user file belongs."""
    from models.home import companion_home

    return (home or companion_home()) / "users" / user_key(user_id)
