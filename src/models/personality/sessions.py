"""A personality's conversation state with a user, kept in the database so that every server
replica sees the same one (issue 21): the emotional state's values, the scenario and the turn
count. `PersonalityModel` reads it at the start of a turn and writes it at the end when
`shared_sessions` is on (`companion serve` turns it on); the value is sealed at rest like the
rest of a user's data, and exported and erased with them (its `user_id` column).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from models import db
from models.group_commit import GroupCommit

__all__ = ["Session", "load_session", "restore", "save_session", "store"]


@dataclass
class Session:
    """One user's conversation with the character (`state` is an `EmotionalState`)."""

    state: Any
    history: list[dict[str, str]] = field(default_factory=list)
    context: str | None = None
    turn: int = 0


def _engine() -> Any:
    return db.connect()


def load_session(model: str, user: str) -> dict[str, Any] | None:
    """The stored state of `model` (CATEGORY/NAME) with `user`, or None."""
    from models.privacy.crypto import unseal

    t = db.personality_sessions
    with _engine().connect() as conn:
        found = conn.scalar(select(t.c.state).where(t.c.user_id == user, t.c.model == model))
    return unseal(found, as_json=True) if found is not None else None


def save_session(model: str, user: str, state: dict[str, Any] | None) -> None:
    """Store (or, with None, forget) the state of `model` with `user`. A store is committed
    with the others that arrive while one is being written (`GroupCommit`: 32 turns ending
    at once made 32 transactions, each with its own sync to disk), in arrival order; it
    returns once committed."""
    from models.privacy.crypto import seal

    engine = _engine()
    sealed = seal(state, as_json=True) if state is not None else None
    _group(engine).submit((model, user, sealed, db.utc_now()), functools.partial(_write, engine))


def _write(engine: Any, batch: list[tuple[str, str, Any, str]]) -> list[None]:
    """Upsert (or, for None, delete) `batch`'s states in one transaction, in arrival order (a
    later state of the same session wins)."""
    t = db.personality_sessions
    with db.write_transaction(engine) as conn:
        for model, user, sealed, at in batch:
            if sealed is None:
                conn.execute(delete(t).where(t.c.user_id == user, t.c.model == model))
            else:
                db.upsert(conn, t, {"user_id": user, "model": model}, {"state": sealed, "updated_at": at})
    return [None] * len(batch)


_groups: dict[str, GroupCommit[tuple[str, str, Any, str], None]] = {}
_groups_lock = threading.Lock()


def _group(engine: Any) -> GroupCommit[tuple[str, str, Any, str], None]:
    key = engine.url.render_as_string(hide_password=False)
    with _groups_lock:
        return _groups.setdefault(key, GroupCommit())


def restore(session: Any, model: str, user: str, scenarios: Any) -> None:
    """Put the stored state of `model` with `user` into `session` (as another replica left it)."""
    data = load_session(model, user)
    if not data:
        return
    values = data.get("values") or {}
    session.state.values = {k: float(values.get(k, v)) for k, v in session.state.values.items()}
    context = data.get("context")
    session.context = context if context is None or context in scenarios else session.context
    session.turn = int(data.get("turn", session.turn))


def store(session: Any, model: str, user: str) -> None:
    """Store `session`'s state (emotional values, scenario, turn count)."""
    save_session(model, user, {"values": session.state.to_dict(), "context": session.context, "turn": session.turn})
