"""`time_period` strings: which messages of a conversation source to keep.

Accepted forms (case-insensitive):

* `all` (or empty / None): no limit
* `last_N_hours`, `last_N_days`, `last_N_weeks` (also `last_hour`, `last_day`, `last_week`,
  and minutes): relative to now (or the `now` passed in)
* an ISO-8601 range `START..END` or `START/END`, either side optional (`2024-05-01..`,
  `..2024-06-01T12:00:00+02:00`); a bare date as END means the end of that day
* a single ISO date `2024-05-01`: that whole day (UTC unless an offset is given)

Times without an offset are UTC. The range is half-open: START ≤ t < END.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from models.errors import DataError

__all__ = ["TimeRange", "parse_time_period", "parse_timestamp"]

_RELATIVE = re.compile(r"^last_(?:(\d+)_)?(minute|hour|day|week)s?$")
_UNITS = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
    "week": timedelta(weeks=1),
}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class TimeRange:
    """A half-open interval [start, end); None on a side means unbounded."""

    start: datetime | None
    end: datetime | None
    label: str

    def contains(self, moment: datetime) -> bool:
        if self.start is not None and moment < self.start:
            return False
        return not (self.end is not None and moment >= self.end)

    @property
    def unbounded(self) -> bool:
        return self.start is None and self.end is None

    def to_json(self) -> dict[str, str | None]:
        return {
            "label": self.label,
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
        }


def parse_timestamp(text: str) -> datetime:
    """An ISO-8601 timestamp as an aware datetime (UTC when no offset is given).

    Accepts DiscordChatExporter's forms, including 7-digit fractions and a trailing `Z`.
    """
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    # Python < 3.12 accepts at most 6 fractional digits: trim longer fractions (DCE writes 7).
    raw = re.sub(r"(\.\d{6})\d+", r"\1", raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise DataError(f"{text!r} is not an ISO-8601 time (e.g. 2024-05-01T18:02:11+00:00)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bound(text: str, is_end: bool) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    moment = parse_timestamp(text)
    if is_end and _DATE_ONLY.match(text):
        moment += timedelta(days=1)
    return moment


def parse_time_period(period: str | None, now: datetime | None = None) -> TimeRange:
    """Parse a `time_period` string (see the module docstring); DataError with examples if bad."""
    if period is None or not str(period).strip() or str(period).strip().lower() == "all":
        return TimeRange(None, None, "all")
    label = str(period).strip()
    key = label.lower()
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    m = _RELATIVE.match(key)
    if m:
        count = int(m.group(1) or 1)
        if count <= 0:
            raise DataError(f"time_period {label!r}: the count must be positive")
        return TimeRange(now - count * _UNITS[m.group(2)], None, label)
    sep = ".." if ".." in label else "/" if "/" in label else None
    try:
        if sep:
            left, right = label.split(sep, 1)
            start, end = _bound(left, False), _bound(right, True)
            if start and end and end <= start:
                raise DataError(f"time_period {label!r}: the end is not after the start")
            return TimeRange(start, end, label)
        if _DATE_ONLY.match(label):
            day = date.fromisoformat(label)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return TimeRange(start, start + timedelta(days=1), label)
        start = parse_timestamp(label)
        return TimeRange(start, None, label)
    except DataError as exc:
        if "time_period" in str(exc):
            raise
    raise DataError(
        f"time_period {label!r} is not understood; use 'all', 'last_30_days', 'last_12_hours', 'last_2_weeks', "
        "'2024-05-01', or an ISO range like '2024-05-01..2024-06-01'"
    )
