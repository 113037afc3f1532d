"""Who is acting: the user every access check is made for.

In order: the explicit `user=` argument of the API being called (ModelManager.load_model,
ModelVersionControl(user=...), ModelUpdateManager(user=...), the server's API key); else the
innermost `acting_as(user)` block in this thread or task; else `$COMPANION_USER`; else the
policy's `security.local_user`; else `"local"`, the local owner the built-in config grants
`admin` on every model (so the CLI and `make demo` work out of the box).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator

__all__ = ["LOCAL_USER", "USER_ENV", "acting_as", "current_user", "explicit_user"]

LOCAL_USER = "local"
USER_ENV = "COMPANION_USER"

_ACTING: contextvars.ContextVar[str | None] = contextvars.ContextVar("companion_acting_user", default=None)


@contextlib.contextmanager
def acting_as(user_id: str) -> Iterator[str]:
    """Run the block as `user_id` (checks, audit rows and generation events name this user)."""
    if not isinstance(user_id, str) or not user_id.strip():
        raise ValueError(f"acting_as needs a non-empty user id, got {user_id!r}")
    token = _ACTING.set(user_id)
    try:
        yield user_id
    finally:
        _ACTING.reset(token)


def explicit_user() -> str | None:
    """The user named by `acting_as` or `$COMPANION_USER`, or None."""
    return _ACTING.get() or os.environ.get(USER_ENV) or None


def current_user(user: str | None = None, local_user: str | None = None) -> str:
    """`user` if given, else the acting user as the module doc describes."""
    return user or explicit_user() or local_user or LOCAL_USER
