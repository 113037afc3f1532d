"""Feedback events: what a user did with a response, in one validated shape.

| kind | fields | meaning for the learner |
| --- | --- | --- |
| `rating` | `text`, `rating` (+1/−1 thumbs, or 1–5 stars), `scale` | satisfaction target (0–1) for `text` |
| `choice` | `text` (chosen), `rejected` (the other candidates) | `text` is preferred to each rejected one |
| `regenerate` | `text` | the user asked for another answer: a mild negative for `text` |
| `edit` | `text` (ours), `edited_text` (theirs) | theirs is preferred; the weight grows with the edit distance |

Every event has a UTC `timestamp`, and optionally `context` (what the response answered),
`response_id`, `user` and `meta`. `rating` of −1 or +1 is read as thumbs unless
`scale="stars"`; 2–5 are stars.

`events_from_feedback_file(path)` turns the shipped sample
(`training_data/user_data/feedback.jsonl`: `id`, `piece`, `suggestion`, `response`
accepted|rejected|edited, `rating` 1–5, `comment`) into rating events.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from models.errors import DataError

__all__ = ["FeedbackError", "FeedbackEvent", "edit_distance", "events_from_feedback_file"]


class FeedbackError(DataError):
    """Feedback that cannot be recorded (bad fields, unknown response id); nothing was stored."""


def _now() -> str:
    from models.db import utc_now

    return utc_now()


class FeedbackEvent(BaseModel):
    """One piece of feedback on one response."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["rating", "choice", "regenerate", "edit"]
    text: str = Field(description="The response the feedback is about (for `choice`: the chosen one).")
    rating: float | None = Field(None, description="+1/−1 (thumbs) or 1–5 (stars); `rating` events only.")
    scale: Literal["thumbs", "stars"] | None = Field(None, description="Inferred from `rating` when omitted.")
    rejected: list[str] = Field(default_factory=list, description="`choice`: the candidates not chosen.")
    edited_text: str | None = Field(None, description="`edit`: the user's version.")
    context: str | None = None
    response_id: str | None = None
    user: str | None = None
    timestamp: str = Field(default_factory=_now)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> FeedbackEvent:
        if self.kind == "rating":
            if self.rating is None:
                raise ValueError("rating: required for a rating event")
            scale = self.scale or ("thumbs" if self.rating in (-1, 1) else "stars")
            if scale == "thumbs" and self.rating not in (-1, 1):
                raise ValueError(f"rating: thumbs ratings are -1 or +1, got {self.rating}")
            if scale == "stars" and not 1 <= self.rating <= 5:
                raise ValueError(f"rating: star ratings are 1 to 5, got {self.rating}")
            object.__setattr__(self, "scale", scale)
        elif self.rating is not None:
            raise ValueError(f"rating: only rating events carry one (this is a {self.kind} event)")
        if self.kind == "choice" and not self.rejected:
            raise ValueError("rejected: a choice event needs the candidates that were not chosen")
        if self.kind == "edit" and self.edited_text is None:
            raise ValueError("edited_text: required for an edit event")
        return self

    @classmethod
    def parse(cls, data: dict[str, Any] | FeedbackEvent, source: str = "feedback") -> FeedbackEvent:
        """Validate `data`; a `FeedbackError` names the bad field."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                problems.append(f"{loc}: {msg}" if loc else msg)
            raise FeedbackError(f"{source}: " + "; ".join(problems)) from None

    @property
    def value(self) -> float:
        """The satisfaction this event implies for `text`, in [0, 1]."""
        if self.kind == "rating":
            r = float(self.rating or 0)
            return (r + 1) / 2 if self.scale == "thumbs" else (r - 1) / 4
        if self.kind == "regenerate":
            return 0.25
        if self.kind == "edit":
            return max(0.0, 1.0 - self.edit_fraction)
        return 1.0

    @property
    def edit_fraction(self) -> float:
        """Edit distance between `text` and `edited_text`, as a share of the longer one (0–1)."""
        if self.edited_text is None:
            return 0.0
        longest = max(len(self.text), len(self.edited_text), 1)
        return edit_distance(self.text, self.edited_text) / longest


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (characters), O(len(a)·len(b)) time, O(len(b)) memory."""
    if a == b:
        return 0
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def events_from_feedback_file(path: str | Path) -> list[FeedbackEvent]:
    """Rating events from a `feedback.jsonl` of the shipped sample format (one per row).

    `suggestion` is the judged text, `piece` the context, `rating` (1–5 stars) the target;
    `response` and `comment` go to `meta`. A bad row raises `FeedbackError` naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "feedback.jsonl"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FeedbackError(f"{path}: file not found") from None
    stamp = _file_time(path)
    events = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FeedbackError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise FeedbackError(f"{where}: expected a JSON object")
        for key in ("suggestion", "rating"):
            if key not in row:
                raise FeedbackError(f"{where}: missing field {key!r}")
        response = row.get("response")
        if response is not None and response not in ("accepted", "rejected", "edited"):
            raise FeedbackError(f"{where}: response: expected accepted, rejected or edited, got {response!r}")
        events.append(
            FeedbackEvent.parse(
                {
                    "kind": "rating",
                    "text": row["suggestion"],
                    "rating": row["rating"],
                    "scale": "stars",
                    "context": row.get("piece"),
                    "response_id": row.get("id"),
                    "timestamp": row.get("timestamp") or stamp,
                    "meta": {"response": response, "comment": row.get("comment")},
                },
                where,
            )
        )
    if not events:
        raise FeedbackError(f"{path}: no feedback rows")
    return events


def _file_time(path: Path) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="microseconds")
