"""Feedback: the reading interface the monitor computes `user_satisfaction` from.

Personalization records feedback (ratings, choices between candidates, regenerations, edits);
the monitor only *reads* it, through any number of registered `FeedbackSource`s:

    class MySource:
        def read_feedback(self, category, name, start, end) -> Iterable[FeedbackEvent]: ...

    register_feedback_source(MySource())

The built-in `TableFeedbackSource` reads a `feedback` table in the metadata database when one
exists with at least the columns `at` (UTC ISO-8601 text), `model` (the model's config name)
and `kind`, and optionally `value`, `category`, `version`, `user_hash`. With no source and no
table, satisfaction is None with the reason "no feedback source".

How each event counts (`classify`), and satisfaction = positive / all classified events:

| kind         | value                          | positive  | negative  | neutral |
| ------------ | ------------------------------ | --------- | --------- | ------- |
| `rating`     | 1–5 stars                      | 4–5       | 1–2       | 3       |
| `thumbs`     | +1 / −1                        | > 0       | < 0       | 0       |
| `choice`     | (the reply the user picked)    | always    |           |         |
| `regenerate` | (the user asked for another)   |           | always    |         |
| `edit`       | share of the reply changed 0–1 | ≤ 0.1     | ≥ 0.5     | between |

Events with an unknown kind or an out-of-range value are not counted (and are reported).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

__all__ = [
    "FeedbackEvent",
    "FeedbackSource",
    "Satisfaction",
    "TableFeedbackSource",
    "classify",
    "feedback_sources",
    "register_feedback_source",
    "satisfaction",
    "unregister_feedback_source",
]

Verdict = Literal["positive", "negative", "neutral", "invalid"]
HEAVY_EDIT = 0.5
LIGHT_EDIT = 0.1


@dataclass(frozen=True)
class FeedbackEvent:
    """One piece of feedback on one reply of a model."""

    at: datetime
    kind: str
    value: float | None = None
    version: str | None = None
    user_hash: str | None = None


class FeedbackSource(Protocol):
    def read_feedback(
        self, category: str, name: str, start: datetime | None, end: datetime | None
    ) -> Iterable[FeedbackEvent]:
        """The feedback on model `category/name` with `start <= at < end` (None: unbounded)."""
        ...


def classify(event: FeedbackEvent) -> Verdict:
    """Positive, negative or neutral (see the module table); `invalid` when it cannot count."""
    kind, v = event.kind.lower(), event.value
    if kind == "choice":
        return "positive"
    if kind == "regenerate":
        return "negative"
    if v is None:
        return "invalid"
    if kind == "rating":
        if not 1 <= v <= 5:
            return "invalid"
        return "positive" if v >= 4 else "negative" if v <= 2 else "neutral"
    if kind == "thumbs":
        return "positive" if v > 0 else "negative" if v < 0 else "neutral"
    if kind == "edit":
        if not 0 <= v <= 1:
            return "invalid"
        return "positive" if v <= LIGHT_EDIT else "negative" if v >= HEAVY_EDIT else "neutral"
    return "invalid"


@dataclass(frozen=True)
class Satisfaction:
    percent: float | None
    positive: int
    negative: int
    neutral: int
    invalid: int

    @property
    def counted(self) -> int:
        return self.positive + self.negative + self.neutral


def satisfaction(events: Iterable[FeedbackEvent]) -> Satisfaction:
    counts = {"positive": 0, "negative": 0, "neutral": 0, "invalid": 0}
    for event in events:
        counts[classify(event)] += 1
    counted = counts["positive"] + counts["negative"] + counts["neutral"]
    percent = 100.0 * counts["positive"] / counted if counted else None
    return Satisfaction(percent, counts["positive"], counts["negative"], counts["neutral"], counts["invalid"])


class TableFeedbackSource:
    """Reads a `feedback` table of the metadata database, if there is one (see module doc)."""

    REQUIRED = frozenset({"at", "model", "kind"})

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def read_feedback(
        self, category: str, name: str, start: datetime | None, end: datetime | None
    ) -> list[FeedbackEvent]:
        from sqlalchemy import MetaData, Table, inspect, select

        from models import db
        from models.training_data.timeperiod import parse_timestamp

        engine = db.connect(self.url)
        if not inspect(engine).has_table("feedback"):
            return []
        table = Table("feedback", MetaData(), autoload_with=engine)
        cols = table.c
        if not set(cols.keys()) >= self.REQUIRED:
            return []
        query = select(table).where(cols.model == name)
        if "category" in cols:
            query = query.where(cols.category == category)
        if start is not None:
            query = query.where(cols.at >= start.isoformat(timespec="microseconds"))
        if end is not None:
            query = query.where(cols.at < end.isoformat(timespec="microseconds"))
        out = []
        with engine.connect() as conn:
            for row in conn.execute(query).mappings():
                value = row.get("value")
                out.append(
                    FeedbackEvent(
                        at=parse_timestamp(str(row["at"])),
                        kind=str(row["kind"]),
                        value=float(value) if value is not None else None,
                        version=row.get("version"),
                        user_hash=row.get("user_hash"),
                    )
                )
        return out


_SOURCES: list[FeedbackSource] = []
_LOCK = threading.Lock()


def register_feedback_source(source: FeedbackSource) -> None:
    """Add a source the monitor reads feedback from (personalization registers its own)."""
    if not callable(getattr(source, "read_feedback", None)):
        raise TypeError(f"{source!r} has no read_feedback(category, name, start, end) method")
    with _LOCK:
        if source not in _SOURCES:
            _SOURCES.append(source)


def unregister_feedback_source(source: FeedbackSource) -> None:
    with _LOCK:
        if source in _SOURCES:
            _SOURCES.remove(source)


def feedback_sources() -> list[FeedbackSource]:
    """The registered sources, then the built-in table reader."""
    with _LOCK:
        return [*_SOURCES, TableFeedbackSource()]
