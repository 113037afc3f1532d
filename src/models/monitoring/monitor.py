"""ModelPerformanceMonitor: response time, accuracy and satisfaction of a model over a window.

    monitor = ModelPerformanceMonitor()
    m = monitor.get_performance_metrics(model_name="luna_personality", time_period="last_24_hours")
    m["avg_response_time"], m["accuracy"], m["user_satisfaction"]     # ms, %, %

Every number comes from a record: generation events (`models.monitoring.events`), the latest
evaluation run (`models.evaluation`), feedback (`models.monitoring.feedback`). A number that has
no record behind it is None, and `m["reasons"][key]` says why. Definitions: docs/operations.md.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from models.monitoring.events import EventRecorder, get_recorder
from models.monitoring.feedback import FeedbackEvent, FeedbackSource, feedback_sources, satisfaction

__all__ = ["ModelPerformanceMonitor"]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@dataclass(frozen=True)
class _Window:
    start: datetime | None
    end: datetime | None
    label: str

    def to_json(self) -> dict[str, str | None]:
        return {
            "label": self.label,
            "start": _iso(self.start) if self.start else None,
            "end": _iso(self.end) if self.end else None,
        }


class ModelPerformanceMonitor:
    """Reads generation events, evaluation runs and feedback; computes metrics per window."""

    def __init__(
        self,
        manager: Any = None,
        *,
        recorder: EventRecorder | None = None,
        feedback: list[FeedbackSource] | None = None,
        database_url: str | None = None,
    ) -> None:
        self._manager = manager
        self._recorder = recorder
        self._feedback = feedback
        self.database_url = database_url

    # --- plumbing --------------------------------------------------------------------------

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from models.model_manager import ModelManager

            self._manager = ModelManager()
        return self._manager

    @property
    def recorder(self) -> EventRecorder:
        return self._recorder or get_recorder()

    def _engine(self) -> Any:
        from models import db

        self.recorder.flush()  # this process's queued events count too
        return db.connect(self.database_url)

    def resolve(self, model_name: str, category: str | None = None) -> tuple[str, str]:
        """`(category, config name)` for `luna`, `luna_personality` or `personality/luna`."""
        if not isinstance(model_name, str) or not model_name.strip():
            raise ValueError("model_name must be a non-empty string such as 'luna' or 'personality/luna'")
        if category is None and "/" in model_name:
            category, model_name = model_name.split("/", 1)
        if category is not None:
            return category, self.manager.canonical(category, model_name)[0]
        return self.manager.find(model_name)

    def window(self, time_period: str | None) -> _Window:
        """The time range `time_period` names, now being the monitor clock's now."""
        from models.training_data.timeperiod import parse_time_period

        r = parse_time_period(time_period, now=self.recorder.now())
        return _Window(r.start, r.end, r.label)

    # --- the metrics -------------------------------------------------------------------------

    def get_performance_metrics(
        self, model_name: str, time_period: str = "last_24_hours", *, category: str | None = None
    ) -> dict[str, Any]:
        """Response time (ms), throughput, accuracy (%) and user satisfaction (%) of a model
        within `time_period` (`last_24_hours`, `last_7_days`, `2024-05-01..2024-06-01`, `all`)."""
        category, name = self.resolve(model_name, category)
        win = self.window(time_period)
        rows = self._events(category, name, win)
        reasons: dict[str, str] = {}
        out: dict[str, Any] = {"model": f"{category}/{name}", "time_period": win.label, "window": win.to_json()}
        out.update(self._latency(rows, reasons, win))
        out.update(self._accuracy(category, name, rows, reasons))
        out.update(self._satisfaction(category, name, win, reasons))
        out["reasons"] = reasons
        return out

    def _events(self, category: str, name: str, win: _Window) -> list[Any]:
        from sqlalchemy import select

        from models import db

        t = db.generation_events
        query = select(t).where(t.c.category == category, t.c.name == name)
        if win.start is not None:
            query = query.where(t.c.at >= _iso(win.start))
        if win.end is not None:
            query = query.where(t.c.at < _iso(win.end))
        with self._engine().connect() as conn:
            return list(conn.execute(query.order_by(t.c.at)).mappings())

    @staticmethod
    def _latency(rows: list[Any], reasons: dict[str, str], win: _Window) -> dict[str, Any]:
        ok = [r for r in rows if r["error"] is None]
        out: dict[str, Any] = {
            "requests": len(rows),
            "errors": len(rows) - len(ok),
            "avg_response_time": None,
            "p50_response_time": None,
            "p95_response_time": None,
            "avg_time_to_first_token": None,
            "tokens_per_second": None,
            "prompt_tokens": sum(r["prompt_tokens"] for r in ok),
            "completion_tokens": sum(r["completion_tokens"] for r in ok),
            "versions": dict(Counter(r["version"] or "unversioned" for r in rows)),
            "engines": dict(Counter(r["engine"] for r in rows)),
        }
        if not ok:
            why = f"no successful generations in {win.label}" if rows else f"no generations recorded in {win.label}"
            for key in ("avg_response_time", "p50_response_time", "p95_response_time", "avg_time_to_first_token"):
                reasons[key] = why
            reasons["tokens_per_second"] = why
            return out
        lat = np.array([r["latency_s"] for r in ok], dtype=np.float64)
        out["avg_response_time"] = _ms(float(lat.mean()))
        out["p50_response_time"] = _ms(float(np.percentile(lat, 50)))
        out["p95_response_time"] = _ms(float(np.percentile(lat, 95)))
        ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
        if ttft:
            out["avg_time_to_first_token"] = _ms(float(np.mean(ttft)))
        else:
            reasons["avg_time_to_first_token"] = "no generation in the window produced any text"
        total = float(lat.sum())
        if out["completion_tokens"] and total > 0:
            out["tokens_per_second"] = round(out["completion_tokens"] / total, 3)
        else:
            reasons["tokens_per_second"] = "no tokens generated in the window"
        return out

    def latest_evaluation(self, category: str, name: str, version: str | None = None, *, any_version: bool = False):
        """The newest evaluation run row of the model (of `version` unless `any_version`)."""
        from sqlalchemy import select

        from models import db

        t = db.evaluation_runs
        query = select(t).where(t.c.category == category, t.c.name == name)
        if not any_version:
            query = query.where(t.c.version.is_(None) if version is None else t.c.version == version)
        with self._engine().connect() as conn:
            return conn.execute(query.order_by(t.c.at.desc(), t.c.id.desc()).limit(1)).mappings().first()

    def _accuracy(self, category: str, name: str, rows: list[Any], reasons: dict[str, str]) -> dict[str, Any]:
        # The version that served the window's latest request; with no traffic, the newest run.
        version = rows[-1]["version"] if rows else None
        run = self.latest_evaluation(category, name, version, any_version=not rows)
        out: dict[str, Any] = {
            "accuracy": None,
            "perplexity": None,
            "emotion_agreement": None,
            "evaluation": None,
        }
        if run is None:
            other = self.latest_evaluation(category, name, any_version=True)
            shown = version or "unversioned"
            hint = f" (the latest is of version {other['version'] or 'unversioned'})" if other else ""
            reasons["accuracy"] = f"no evaluation run of {category}/{name} {shown}{hint}: run `companion eval {name}`"
            reasons["perplexity"] = reasons["accuracy"]
            reasons["emotion_agreement"] = reasons["accuracy"]
            return out
        out["accuracy"] = round(100.0 * run["next_token_accuracy"], 2)
        out["perplexity"] = round(run["perplexity"], 3)
        if run["emotion_agreement"] is not None:
            out["emotion_agreement"] = round(100.0 * run["emotion_agreement"], 2)
        else:
            reasons["emotion_agreement"] = "not measured for this model (only personality models on a chat base)"
        out["evaluation"] = {
            "id": run["id"],
            "at": run["at"],
            "dataset": run["dataset"],
            "dataset_sha256": run["dataset_sha256"],
            "tokens": run["tokens"],
            "loss": run["loss"],
            "emotion_samples": run["emotion_samples"],
            "version": run["version"],
        }
        return out

    def feedback_events(self, category: str, name: str, win: _Window) -> list[FeedbackEvent]:
        """Feedback on the model from every source, within the window."""
        sources = self._feedback if self._feedback is not None else feedback_sources()
        events: list[FeedbackEvent] = []
        for source in sources:
            events.extend(source.read_feedback(category, name, win.start, win.end))
        return events

    def _satisfaction(self, category: str, name: str, win: _Window, reasons: dict[str, str]) -> dict[str, Any]:
        events = self.feedback_events(category, name, win)
        s = satisfaction(events)
        out = {
            "user_satisfaction": None if s.percent is None else round(s.percent, 2),
            "feedback": {"positive": s.positive, "negative": s.negative, "neutral": s.neutral, "invalid": s.invalid},
        }
        if s.percent is None:
            reasons["user_satisfaction"] = f"no feedback on {category}/{name} in {win.label}" + (
                f" ({s.invalid} feedback events could not be counted)" if s.invalid else ""
            )
        return out

    # --- over time (charts) ------------------------------------------------------------------

    def series(
        self, model_name: str, time_period: str = "last_24_hours", *, buckets: int = 24, category: str | None = None
    ) -> list[dict[str, Any]]:
        """The window cut into `buckets` equal intervals, each with requests, mean and p95
        response time (ms) and satisfaction (%); None where an interval has no data."""
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, not {buckets}")
        category, name = self.resolve(model_name, category)
        win = self.window(time_period)
        rows = self._events(category, name, win)
        feedback = self.feedback_events(category, name, win)
        from models.training_data.timeperiod import parse_timestamp

        times = [parse_timestamp(r["at"]) for r in rows]
        moments = times + [f.at for f in feedback]
        start = win.start or (min(moments) if moments else self.recorder.now() - timedelta(hours=1))
        end = win.end or self.recorder.now()
        if moments:
            end = max(end, max(moments) + timedelta(microseconds=1))
        step = (end - start) / buckets
        out = []
        for i in range(buckets):
            lo, hi = start + i * step, start + (i + 1) * step
            lat = [r["latency_s"] for r, t in zip(rows, times, strict=True) if lo <= t < hi and r["error"] is None]
            fb = satisfaction(f for f in feedback if lo <= f.at < hi)
            out.append(
                {
                    "start": _iso(lo),
                    "end": _iso(hi),
                    "requests": sum(1 for t in times if lo <= t < hi),
                    "avg_response_time": _ms(float(np.mean(lat))) if lat else None,
                    "p95_response_time": _ms(float(np.percentile(lat, 95))) if lat else None,
                    "user_satisfaction": None if fb.percent is None else round(fb.percent, 2),
                }
            )
        return out

    def active_models(self, time_period: str = "last_24_hours") -> list[tuple[str, str, int]]:
        """`(category, name, requests)` of every model with generations in the window."""
        from sqlalchemy import func, select

        from models import db

        t = db.generation_events
        win = self.window(time_period)
        query = select(t.c.category, t.c.name, func.count()).group_by(t.c.category, t.c.name)
        if win.start is not None:
            query = query.where(t.c.at >= _iso(win.start))
        if win.end is not None:
            query = query.where(t.c.at < _iso(win.end))
        with self._engine().connect() as conn:
            return sorted((c, n, int(k)) for c, n, k in conn.execute(query))
