"""`UserMemory`: facts a user has told the companion, kept per user (Letta's "human" block).

    mem = UserMemory("sam")
    fid = mem.add("My sister Ada lives in Lisbon", kind="person")
    mem.remember_from("My name is Sam and I'm writing a mystery novel.")   # extracts two facts
    mem.block(query="what should Ada read?", budget_tokens=64)              # for the prompt
    mem.edit(fid, "My sister Ada lives in Porto"); mem.remove(fid)
    mem.export(); mem.erase()

Facts live in the `user_memory` table (one transaction per change; the text encrypted at rest,
`models.privacy.crypto`). `block()` picks facts
for the prompt: the ones that share words with the query first, then the newest, until the
token budget is spent (whole facts only); the user's name always comes first.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select, update

from models import db
from models.errors import DataError
from models.personalization.features import content_words
from models.privacy.crypto import seal, unseal

__all__ = ["KINDS", "Fact", "UserMemory", "extract_facts"]

KINDS = ("name", "like", "dislike", "project", "person", "fact")
_MAX_FACT = 500

_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    ("name", re.compile(r"\b(?:my name is|call me)\s+([A-Z][\w'-]+)", re.IGNORECASE), "Their name is {0}."),
    (
        "like",
        re.compile(r"\bI (?:really )?(?:love|like|enjoy|adore)\s+([^.!?,;]{3,80})", re.IGNORECASE),
        "They like {0}.",
    ),
    (
        "dislike",
        re.compile(r"\bI (?:really )?(?:hate|dislike|can't stand|don't like)\s+([^.!?,;]{3,80})", re.IGNORECASE),
        "They dislike {0}.",
    ),
    (
        "project",
        re.compile(r"\bI(?:'m| am) (?:writing|working on)\s+([^.!?;]{3,100})", re.IGNORECASE),
        "They are writing {0}.",
    ),
    (
        "person",
        re.compile(
            r"\b[Mm]y (sister|brother|mother|mom|father|dad|wife|husband|partner|friend|son|daughter|cat|dog|editor)"
            r"(?:'s name is|,| is called| is named)?\s+([A-Z][\w'-]+)"
        ),
        "Their {0} is {1}.",
    ),
]


@dataclass(frozen=True)
class Fact:
    id: int
    kind: str
    text: str
    source: str
    created_at: str
    updated_at: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def extract_facts(message: str) -> list[tuple[str, str]]:
    """`(kind, fact)` pairs stated in `message` ("my name is ...", "I love ...", "my sister ...")."""
    out: list[tuple[str, str]] = []
    for kind, pattern, template in _PATTERNS:
        for m in pattern.finditer(message):
            groups = [g.strip() for g in m.groups()]
            fact = template.format(*groups)
            if (kind, fact) not in out:
                out.append((kind, fact))
    return out


class UserMemory:
    """The facts kept about one user."""

    def __init__(self, user: str) -> None:
        if not isinstance(user, str) or not user.strip() or len(user) > 200:
            raise DataError(f"user: expected a non-empty name of at most 200 characters, got {user!r}")
        self.user = user
        self._table = db.user_memory

    def _engine(self) -> Any:
        from models.personalization.storage import home_engine

        return home_engine()

    def _changed(self) -> None:
        from models.personalization.storage import forget_cached

        forget_cached("memory", self.user)

    @staticmethod
    def _check(kind: str, text: str) -> str:
        if kind not in KINDS:
            raise DataError(f"kind: unknown memory kind {kind!r}; known: {', '.join(KINDS)}")
        if not isinstance(text, str) or not text.strip():
            raise DataError("text: a fact needs some text")
        if len(text) > _MAX_FACT:
            raise DataError(f"text: a fact is at most {_MAX_FACT} characters (got {len(text)})")
        return " ".join(text.split())

    def add(self, text: str, kind: str = "fact", source: str = "user") -> int:
        """Store a fact; returns its id. The same text twice is stored once."""
        clean = self._check(kind, text)
        t = self._table
        now = db.utc_now()
        # Texts are sealed at rest (a token per write), so equal texts are found by reading them.
        # The user's facts as this process last read them (decrypted, cached) are compared
        # before the write lock is taken; inside it only a match is confirmed and the facts
        # added since that read are unsealed, so a writer does not hold the database while it
        # decrypts every fact (a busy server's chats waited on exactly that).
        known = self.list()
        hit = next((f.id for f in known if f.text == clean), None)
        last = max((f.id for f in known), default=0)
        with db.write_transaction(self._engine()) as conn:
            if hit is not None:
                stored = conn.scalar(select(t.c.text).where(t.c.id == hit, t.c.user_id == self.user))
                if stored is not None and unseal(stored) == clean:
                    return hit
                last = 0  # the cached read was stale: compare every fact
            rows = conn.execute(select(t.c.id, t.c.text).where(t.c.user_id == self.user, t.c.id > last)).all()
            for fact_id, stored in rows:
                if unseal(stored) == clean:
                    return int(fact_id)
            row = dict(user_id=self.user, kind=kind, text=seal(clean), source=source, created_at=now, updated_at=now)
            fact_id = int(conn.execute(insert(t).values(**row)).inserted_primary_key[0])
        self._changed()
        return fact_id

    def remember_from(self, message: str) -> list[int]:
        """Extract and store the facts stated in a user's message; returns their ids."""
        return [self.add(fact, kind, source="message") for kind, fact in extract_facts(message)]

    def list(self) -> list[Fact]:
        from models.personalization.storage import cached

        t = self._table

        def load() -> tuple[Fact, ...]:
            with self._engine().connect() as conn:
                rows = conn.execute(select(t).where(t.c.user_id == self.user).order_by(t.c.id)).mappings()
                return tuple(
                    Fact(r["id"], r["kind"], unseal(r["text"]), r["source"], r["created_at"], r["updated_at"])
                    for r in rows
                )

        return list(cached("memory", self.user, load))

    def get(self, fact_id: int) -> Fact:
        for fact in self.list():
            if fact.id == fact_id:
                return fact
        raise DataError(f"fact_id: {self.user!r} has no fact {fact_id}")

    def edit(self, fact_id: int, text: str, kind: str | None = None) -> Fact:
        """Change a fact's text (and kind); DataError if the user has no such fact."""
        old = self.get(fact_id)
        clean = self._check(kind or old.kind, text)
        t = self._table
        self._changed()
        with db.write_transaction(self._engine()) as conn:
            conn.execute(
                update(t)
                .where(t.c.id == fact_id, t.c.user_id == self.user)
                .values(text=seal(clean), kind=kind or old.kind, updated_at=db.utc_now())
            )
        self._changed()
        return self.get(fact_id)

    def remove(self, fact_id: int) -> None:
        t = self._table
        self._changed()
        with db.write_transaction(self._engine()) as conn:
            n = conn.execute(delete(t).where(t.c.id == fact_id, t.c.user_id == self.user)).rowcount
        self._changed()
        if n == 0:
            raise DataError(f"fact_id: {self.user!r} has no fact {fact_id}")

    def erase(self) -> int:
        """Forget every fact about this user; returns how many were removed."""
        t = self._table
        self._changed()
        with db.write_transaction(self._engine()) as conn:
            n = conn.execute(delete(t).where(t.c.user_id == self.user)).rowcount
        self._changed()
        return n

    def export(self) -> dict[str, Any]:
        """Everything kept, as JSON-ready data."""
        return {"format": "companion-memory/1", "user": self.user, "facts": [f.to_dict() for f in self.list()]}

    def block(
        self,
        query: str | None = None,
        budget_tokens: int = 96,
        count_tokens: Callable[[str], int] | None = None,
        facts: list[Fact] | None = None,
    ) -> str:
        """The "what you know about the user" text for the prompt, within `budget_tokens`."""
        facts = self.list() if facts is None else facts
        if not facts or budget_tokens <= 0:
            return ""
        count = count_tokens or (lambda s: max(1, len(s) // 4))
        words = content_words(query or "")

        def rank(f: Fact) -> tuple[int, int, int]:
            return (0 if f.kind == "name" else 1, -len(content_words(f.text) & words), -f.id)

        header = "What you know about the user:"
        used = count(header)
        chosen = []
        for fact in sorted(facts, key=rank):
            cost = count(f"- {fact.text}")
            if used + cost > budget_tokens:
                continue
            chosen.append(fact)
            used += cost
        if not chosen:
            return ""
        chosen.sort(key=lambda f: f.id)
        return "\n".join([header, *(f"- {f.text}" for f in chosen)])
