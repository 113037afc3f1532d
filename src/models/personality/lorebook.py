"""The character lorebook (`character_book`): entries injected when their keys come up.

An entry activates when one of its `keys` appears in the last `scan_depth` messages (whole
words, case-insensitive unless `case_sensitive`; V3 `use_regex` keys are `/pattern/flags`),
and, when `selective`, one of its `secondary_keys` too. `constant` entries always activate;
disabled ones never do. Activated entries are ordered by `insertion_order` (lower first) and
cut to the book's `token_budget` by dropping the lowest `priority` first. With
`recursive_scanning`, activated content can activate further entries.

V3 decorators at the start of `content` are parsed and stripped: `@@activate`,
`@@dont_activate`, `@@activate_only_after N`, `@@activate_only_every N`, `@@scan_depth N`,
`@@additional_keys a,b`, `@@exclude_keys a,b`, `@@position ...`, `@@depth N`, `@@role R`,
`@@ignore_on_max_context`; `@@@` fallback lines are skipped (we know every primary one).

Cards are strangers' files, so matching is bounded (issue 16): regex keys run on the `regex`
package with a time budget per search (`REGEX_BUDGET_S`) and with the interpreter lock released
(`concurrent=True`), so a catastrophic pattern such as `/^(a+)+$/` costs at most the budget and
never freezes other requests or signal handling; a search over budget counts as no match and is
logged. Plain keys are escaped literals (linear time). Every key is compiled once per entry, and
the scanned text is cut to its last `MAX_SCAN_CHARS` characters; all regex searches of one
activation share `ACTIVATION_BUDGET_S`.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from models.errors import CardError
from models.personality.macros import strip_for_matching

__all__ = ["ActiveEntry", "LoreEntry", "Lorebook", "parse_decorators", "strip_decorators"]

_BEFORE = {"before_char", "before_desc"}
_REGEX_KEY = re.compile(r"^/(.*)/([a-z]*)$", re.DOTALL)
#: Seconds one regex key may search one text (a pattern over it counts as no match).
REGEX_BUDGET_S = 0.05
#: Seconds all regex keys together may take in one activation (one reply).
ACTIVATION_BUDGET_S = 0.5
#: Characters of recent chat a scan reads (the newest ones).
MAX_SCAN_CHARS = 20_000
log = logging.getLogger(__name__)
_Matcher = Callable[[str], bool]


def parse_decorators(content: str) -> tuple[dict[str, str], str]:
    """`({name: value}, content without decorator lines)`."""
    decorators: dict[str, str] = {}
    lines = content.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith("@@"):
        line = lines[i]
        if not line.startswith("@@@"):
            name, _, value = line[2:].partition(" ")
            decorators[name.strip()] = value.strip()
        i += 1
    return decorators, "\n".join(lines[i:])


def strip_decorators(content: str) -> str:
    return parse_decorators(content)[1]


def _int(value: str | None, default: int | None = None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


@dataclass
class LoreEntry:
    """A typed view of one entry (defaults per the spec)."""

    keys: list[str]
    content: str
    secondary_keys: list[str] = field(default_factory=list)
    enabled: bool = True
    insertion_order: float = 0
    case_sensitive: bool = False
    priority: float = 0
    constant: bool = False
    selective: bool = False
    position: str = "after_char"
    use_regex: bool = False
    name: str = ""
    decorators: dict[str, str] = field(default_factory=dict)
    _compiled: dict[str, _Matcher | None] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LoreEntry:
        decorators, content = parse_decorators(str(raw.get("content", "")))
        return cls(
            keys=[str(k) for k in raw.get("keys") or []],
            content=content,
            secondary_keys=[str(k) for k in raw.get("secondary_keys") or []],
            enabled=bool(raw.get("enabled", True)),
            insertion_order=raw.get("insertion_order", 0) or 0,
            case_sensitive=bool(raw.get("case_sensitive", False)),
            priority=raw.get("priority", 0) or 0,
            constant=bool(raw.get("constant", False)),
            selective=bool(raw.get("selective", False)),
            position=str(raw.get("position") or "after_char"),
            use_regex=bool(raw.get("use_regex", False)),
            name=str(raw.get("name") or raw.get("comment") or ""),
            decorators=decorators,
        )

    def _matcher(self, key: str) -> _Matcher | None:
        """A compiled test for one key (cached on the entry: a key compiles once)."""
        if key in self._compiled:
            return self._compiled[key]
        found = self._compile(key)
        self._compiled[key] = found
        return found

    def _compile(self, key: str) -> _Matcher | None:
        m = _REGEX_KEY.match(key) if self.use_regex else None
        if m or self.use_regex:
            source, letters = (m.group(1), m.group(2)) if m else (key, "")
            flags = 0 if self.case_sensitive else regex.IGNORECASE
            for f in letters:
                flags |= {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}.get(f, 0)
            try:
                pattern = regex.compile(source, flags)
            except (regex.error, ValueError, OverflowError, RecursionError):
                return None
            return functools.partial(_bounded_search, pattern, self.name or key[:40])
        key = key.strip()
        if not key:
            return None
        flags = 0 if self.case_sensitive else re.IGNORECASE
        left = r"\b" if key[0].isalnum() else ""
        right = r"\b" if key[-1].isalnum() else ""
        literal = re.compile(left + re.escape(key) + right, flags)
        return lambda text: literal.search(text) is not None

    def matches(self, keys: Sequence[str], text: str) -> bool:
        return any(m is not None and m(text) for m in map(self._matcher, keys))


_SCAN = threading.local()  # the deadline of the activation running on this thread


def _bounded_search(pattern: Any, label: str, text: str) -> bool:
    """A regex key's search within the time budget (per search, and what is left of the whole
    activation's), with the interpreter lock released."""
    budget = REGEX_BUDGET_S
    deadline = getattr(_SCAN, "deadline", None)
    if deadline is not None:
        budget = min(budget, deadline - time.monotonic())
        if budget <= 0:
            return False
    try:
        return pattern.search(text, timeout=budget, concurrent=True) is not None
    except TimeoutError:
        log.warning("lorebook entry %r: a regex key ran out of its %.0f ms; no match", label, budget * 1e3)
        return False


@dataclass(frozen=True)
class ActiveEntry:
    """An entry to insert: where, and with which role/depth (V3 `@@depth`, `@@role`)."""

    content: str
    position: str  # "before_char" | "after_char"
    insertion_order: float
    name: str = ""
    depth: int | None = None
    role: str = "system"


class Lorebook:
    """A `character_book` object (kept as read) with entry activation."""

    def __init__(self, raw: dict[str, Any], v3: bool = False) -> None:
        self.raw = raw
        self.v3 = v3
        self.entries = [LoreEntry.from_dict(e) for e in raw.get("entries") or [] if isinstance(e, dict)]

    scan_depth = property(lambda self: _int(self.raw.get("scan_depth"), 4) or 4)
    token_budget = property(lambda self: _int(self.raw.get("token_budget"), None))
    recursive = property(lambda self: bool(self.raw.get("recursive_scanning", False)))

    @staticmethod
    def validate(book: Any, where: str, source: str | None = None) -> None:
        """CardError naming the field when `book` is not a valid lorebook object."""
        if not isinstance(book, dict):
            raise CardError(where, f"expected an object, got {type(book).__name__}", source)
        entries = book.get("entries")
        if not isinstance(entries, list):
            raise CardError(f"{where}.entries", "required: a list of entries", source)
        from models import limits

        cap = limits.LIMITS.lorebook_entries
        if len(entries) > cap:
            raise CardError(
                f"{where}.entries",
                f"{len(entries):,} entries, over the limit of {cap:,} (models.limits: lorebook_entries)",
                source,
            )
        for i, entry in enumerate(entries):
            w = f"{where}.entries[{i}]"
            if not isinstance(entry, dict):
                raise CardError(w, f"expected an object, got {type(entry).__name__}", source)
            for key in ("keys", "secondary_keys"):
                value = entry.get(key, [])
                if not isinstance(value, list) or not all(isinstance(k, str) for k in value):
                    raise CardError(f"{w}.{key}", "expected a list of strings", source)
            if not isinstance(entry.get("content", ""), str):
                raise CardError(f"{w}.content", "expected a string", source)
            if len(entry.get("content", "")) > limits.LIMITS.card_field_chars:
                raise CardError(
                    f"{w}.content",
                    f"over the limit of {limits.LIMITS.card_field_chars:,} characters "
                    "(models.limits: card_field_chars)",
                    source,
                )
            pos = entry.get("position")
            if pos not in (None, "", "before_char", "after_char"):
                raise CardError(f"{w}.position", f"expected 'before_char' or 'after_char', got {pos!r}", source)
            for key in ("insertion_order", "priority"):
                v = entry.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                    raise CardError(f"{w}.{key}", f"expected a number, got {type(v).__name__}", source)

    def _eligible(self, entry: LoreEntry, recent: Callable[[int], str], turn: int) -> bool:
        d = entry.decorators
        if not entry.enabled or "dont_activate" in d:
            return False
        after, every = _int(d.get("activate_only_after")), _int(d.get("activate_only_every"))
        if (after is not None and turn < after) or (every and turn % every):
            return False
        if entry.constant or "activate" in d:
            return True
        text = recent(_int(d.get("scan_depth"), self.scan_depth) or self.scan_depth)
        extra = [k.strip() for k in d.get("additional_keys", "").split(",") if k.strip()]
        exclude = [k.strip() for k in d.get("exclude_keys", "").split(",") if k.strip()]
        if exclude and entry.matches(exclude, text):
            return False
        if not entry.matches(entry.keys + extra, text):
            return False
        return not entry.selective or not entry.secondary_keys or entry.matches(entry.secondary_keys, text)

    def activate(
        self,
        messages: Sequence[str],
        *,
        count_tokens: Callable[[str], int] = lambda s: max(1, len(s) // 4),
        budget: int | None = None,
        turn: int = 0,
    ) -> list[ActiveEntry]:
        """The entries `messages` (oldest first) activate, ordered and within the budget."""
        # Only the messages some entry can scan are cleaned: the cost does not grow with history.
        deepest = max([self.scan_depth] + [_int(e.decorators.get("scan_depth"), 0) or 0 for e in self.entries])
        cleaned = [strip_for_matching(m[-MAX_SCAN_CHARS:]) for m in messages[-deepest:]]
        _SCAN.deadline = time.monotonic() + ACTIVATION_BUDGET_S
        try:
            return self._activate(cleaned, count_tokens, budget, turn)
        finally:
            _SCAN.deadline = None

    def _activate(
        self, cleaned: list[str], count_tokens: Callable[[str], int], budget: int | None, turn: int
    ) -> list[ActiveEntry]:

        def recent(depth: int) -> str:
            return "\n".join(cleaned[-depth:])[-MAX_SCAN_CHARS:] if depth > 0 else ""

        chosen: list[LoreEntry] = []
        extra_text = ""
        for _round in range(3 if self.recursive else 1):
            new = [
                e
                for e in self.entries
                if e not in chosen and self._eligible(e, lambda d: recent(d) + extra_text, turn)  # noqa: B023
            ]
            if not new:
                break
            chosen += new
            extra_text += "\n" + "\n".join(e.content for e in new)
        limits = [x for x in (budget, self.token_budget) if x is not None]
        if limits:
            chosen = _fit(chosen, min(limits), count_tokens)
        chosen.sort(key=lambda e: e.insertion_order)
        return [_active(e) for e in chosen]


def _fit(entries: list[LoreEntry], limit: int, count_tokens: Callable[[str], int]) -> list[LoreEntry]:
    """Drop the lowest priority (then the latest inserted) until the total fits `limit`."""
    kept = sorted(entries, key=lambda e: (-e.priority, e.insertion_order))
    sizes = {id(e): count_tokens(e.content) for e in kept}
    while kept and sum(sizes[id(e)] for e in kept) > limit:
        kept.pop()
    return kept


def _active(e: LoreEntry) -> ActiveEntry:
    d = e.decorators
    pos = d.get("position") or e.position
    return ActiveEntry(
        content=e.content.strip(),
        position="before_char" if pos in _BEFORE else "after_char",
        insertion_order=e.insertion_order,
        name=e.name,
        depth=_int(d.get("depth")),
        role=d.get("role", "system") if d.get("role") in ("system", "user", "assistant") else "system",
    )
