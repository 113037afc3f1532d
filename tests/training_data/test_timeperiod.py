"""`time_period` strings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.errors import DataError
from models.training_data import parse_time_period
from models.training_data.timeperiod import parse_timestamp

NOW = datetime(2024, 5, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [
        ("last_30_days", NOW - timedelta(days=30), None),
        ("last_24_hours", NOW - timedelta(hours=24), None),
        ("LAST_2_WEEKS", NOW - timedelta(weeks=2), None),
        ("last_day", NOW - timedelta(days=1), None),
        ("all", None, None),
        (None, None, None),
        ("2024-05-01..2024-05-03", datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 4, tzinfo=UTC)),
        ("2024-05-01/", datetime(2024, 5, 1, tzinfo=UTC), None),
        ("..2024-05-01T10:00:00+02:00", None, datetime(2024, 5, 1, 8, tzinfo=UTC)),
        ("2024-05-02", datetime(2024, 5, 2, tzinfo=UTC), datetime(2024, 5, 3, tzinfo=UTC)),
    ],
)
def test_forms(period: str | None, start: datetime | None, end: datetime | None) -> None:
    r = parse_time_period(period, NOW)
    assert (r.start, r.end) == (start, end)


@pytest.mark.parametrize("bad", ["yesterday-ish", "last_0_days", "2024-05-03..2024-05-01", "last_3_months"])
def test_bad_periods_explain_the_forms(bad: str) -> None:
    with pytest.raises(DataError, match="time_period"):
        parse_time_period(bad, NOW)


def test_dce_timestamps_with_seven_digit_fractions() -> None:
    t = parse_timestamp("2024-05-02T09:15:27.4412345+00:00")
    assert t.microsecond == 441234 and t.tzinfo is not None
    assert parse_time_period("last_1_hours", NOW).contains(NOW - timedelta(minutes=30))
    assert not parse_time_period("2024-05-02", NOW).contains(datetime(2024, 5, 3, tzinfo=UTC))
