"""Generation events and ModelPerformanceMonitor: exact windows and averages."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from models.errors import DataError, UnknownModelError
from models.monitoring import FeedbackEvent, ModelPerformanceMonitor, attach, generation_user
from models.monitoring.instrument import recording_suspended

from .conftest import T0, ScriptedClock, ScriptedEngine


def _p(values: list[float], q: float) -> float:
    """Linear-interpolation percentile, written out (numpy's default method)."""
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


PLANS = [(0.0625, 0.125, 3), (0.5, 0.25, 2), (0.25, 0.0, 1)]  # latencies 0.3125, 0.75, 0.25


def _generate(model: Any, clock: ScriptedClock, plans: list[tuple[float, float, int]], gap: float = 60.0) -> None:
    for plan in plans:
        model.engine.plan = plan
        model.generate("one two three", max_length=10)
        clock.advance(gap)


def test_windows_and_averages_are_exact(scripted_model: Any, clock: ScriptedClock) -> None:
    clock.jump_to(T0 - timedelta(hours=30))
    _generate(scripted_model, clock, [(1.0, 0.0, 1)])  # outside last_24_hours
    clock.jump_to(T0 - timedelta(hours=2))
    _generate(scripted_model, clock, PLANS)
    clock.jump_to(T0)

    monitor = ModelPerformanceMonitor(scripted_model.manager, feedback=[])
    m = monitor.get_performance_metrics("tiny", time_period="last_24_hours")
    lat = [0.0625 + 2 * 0.125, 0.5 + 0.25, 0.25]
    assert m["requests"] == 3 and m["errors"] == 0
    assert m["avg_response_time"] == pytest.approx(sum(lat) / 3 * 1000, abs=1e-9)
    assert m["avg_response_time"] == 437.5
    assert m["p50_response_time"] == 312.5
    assert m["p95_response_time"] == pytest.approx(_p(lat, 95) * 1000, abs=1e-9)
    assert m["avg_time_to_first_token"] == pytest.approx((0.0625 + 0.5 + 0.25) / 3 * 1000, abs=1e-3)
    assert m["completion_tokens"] == 6 and m["prompt_tokens"] == 9
    assert m["tokens_per_second"] == pytest.approx(6 / sum(lat), abs=1e-3)
    assert m["engines"] == {"scripted": 3}
    assert m["model"] == "base/tiny"

    wider = monitor.get_performance_metrics("tiny", time_period="last_2_days")
    assert wider["requests"] == 4
    assert wider["avg_response_time"] == pytest.approx((sum(lat) + 1.0) / 4 * 1000, abs=1e-9)

    empty = monitor.get_performance_metrics("tiny", time_period="last_1_hours")
    assert empty["requests"] == 0 and empty["avg_response_time"] is None
    assert "no generations recorded in last_1_hours" in empty["reasons"]["avg_response_time"]
    # Numbers with no record behind them are None, with a reason.
    assert m["accuracy"] is None and "companion eval tiny" in m["reasons"]["accuracy"]
    assert m["user_satisfaction"] is None and "no feedback" in m["reasons"]["user_satisfaction"]

    # An ISO range: only the old event.
    day = (T0 - timedelta(hours=30)).date().isoformat()
    assert monitor.get_performance_metrics("tiny", time_period=day)["avg_response_time"] == 1000.0


def test_streaming_cancel_and_errors_are_recorded(scripted_model: Any, clock: ScriptedClock) -> None:
    scripted_model.engine.plan = (0.125, 0.125, 5)
    pieces = scripted_model.stream("a b", max_length=10)
    next(pieces)
    next(pieces)
    pieces.close()  # the client went away after two pieces

    def broken(prompt: str, params: Any):
        yield " x"
        raise RuntimeError("engine fell over")

    scripted_model.engine.stream = broken
    with pytest.raises(RuntimeError):
        scripted_model.generate("a b")
    m = ModelPerformanceMonitor(scripted_model.manager, feedback=[]).get_performance_metrics("tiny", "all")
    assert m["requests"] == 2 and m["errors"] == 1
    assert m["avg_response_time"] == 250.0  # the cancelled stream: 0.125 + 0.125
    rows = _rows()
    assert sorted(r["finish_reason"] for r in rows) == ["cancelled", "error"]
    assert {r["error"] for r in rows} == {None, "RuntimeError"}


def _rows() -> list[Any]:
    from sqlalchemy import select

    from models import db
    from models.monitoring import get_recorder

    get_recorder().flush()
    with db.connect().connect() as conn:
        return list(conn.execute(select(db.generation_events)).mappings())


def test_user_ids_are_pseudonymous_and_suspension_records_nothing(scripted_model: Any) -> None:
    with generation_user("alice@example.com"):
        scripted_model.generate("hello there")
    with recording_suspended():
        scripted_model.generate("not traffic")
    rows = _rows()
    assert len(rows) == 1
    assert rows[0]["user_hash"] and "alice" not in rows[0]["user_hash"] and len(rows[0]["user_hash"]) == 16


class _Persona:
    """A composite model: one request makes two base generations (a best-of-2)."""

    version = "2.1.0"

    def __init__(self, base: Any) -> None:
        self.base = base

    def generate_response(self, message: str, user: str | None = None) -> str:
        a = self.base.generate(message)
        b = self.base.generate(message)
        return max(a, b)


def test_a_composite_request_is_one_event_with_all_its_tokens(scripted_model: Any, clock: ScriptedClock) -> None:
    persona = attach(_Persona(scripted_model), "personality", "tiny")
    scripted_model.engine.plan = (0.25, 0.125, 3)
    persona.generate_response("x y", user="bob")
    rows = [r for r in _rows() if r["category"] == "personality"]
    assert len(rows) == 1 and len(_rows()) == 1  # the base's two generations belong to the request
    row = rows[0]
    assert (row["name"], row["version"], row["completion_tokens"]) == ("tiny", "2.1.0", 6)
    assert row["latency_s"] == pytest.approx(2 * (0.25 + 2 * 0.125))
    assert row["ttft_s"] == pytest.approx(0.25)


class _Feedback:
    def __init__(self, events: list[FeedbackEvent]) -> None:
        self.events = events

    def read_feedback(self, category: str, name: str, start: Any, end: Any) -> list[FeedbackEvent]:
        return [e for e in self.events if (start is None or e.at >= start) and (end is None or e.at < end)]


def test_satisfaction_counts_regenerations_and_heavy_edits_against(scripted_model: Any, clock: ScriptedClock) -> None:
    clock.jump_to(T0)
    at = T0 - timedelta(hours=1)
    old = T0 - timedelta(days=3)
    events = [
        FeedbackEvent(at, "rating", 5),
        FeedbackEvent(at, "thumbs", 1),
        FeedbackEvent(at, "choice"),
        FeedbackEvent(at, "regenerate"),
        FeedbackEvent(at, "edit", 0.8),  # heavy edit: negative
        FeedbackEvent(at, "edit", 0.3),  # neutral
        FeedbackEvent(at, "rating", 9),  # invalid: not counted
        FeedbackEvent(old, "regenerate"),  # outside the window
    ]
    monitor = ModelPerformanceMonitor(scripted_model.manager, feedback=[_Feedback(events)])
    m = monitor.get_performance_metrics("tiny", "last_24_hours")
    assert m["user_satisfaction"] == pytest.approx(100 * 3 / 6, abs=0.01)
    assert m["feedback"] == {"positive": 3, "negative": 2, "neutral": 1, "invalid": 1}


def test_bad_input_is_refused_clearly(scripted_model: Any) -> None:
    monitor = ModelPerformanceMonitor(scripted_model.manager)
    with pytest.raises(DataError, match="not understood"):
        monitor.get_performance_metrics("tiny", time_period="yesterday-ish")
    with pytest.raises(UnknownModelError):
        monitor.get_performance_metrics("no_such_model")
    with pytest.raises(ValueError, match="non-empty"):
        monitor.get_performance_metrics("")


def test_series_buckets_the_window(scripted_model: Any, clock: ScriptedClock) -> None:
    clock.jump_to(T0 - timedelta(hours=5, minutes=30))
    _generate(scripted_model, clock, PLANS[:1])
    clock.jump_to(T0 - timedelta(minutes=30))
    _generate(scripted_model, clock, PLANS[1:2])
    clock.jump_to(T0)
    s = ModelPerformanceMonitor(scripted_model.manager, feedback=[]).series("tiny", "last_6_hours", buckets=6)
    assert [b["requests"] for b in s] == [1, 0, 0, 0, 0, 1]
    assert s[0]["avg_response_time"] == 312.5 and s[5]["avg_response_time"] == 750.0
    assert s[1]["avg_response_time"] is None


def test_scripted_engine_is_a_real_engine(clock: ScriptedClock) -> None:
    engine = ScriptedEngine(clock)
    from models.engines.base import SamplingParams

    assert "".join(engine.stream("a", SamplingParams())) == " w0 w1 w2"
    assert clock.perf() == pytest.approx(0.3125)
