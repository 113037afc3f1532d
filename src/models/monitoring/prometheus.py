"""Prometheus exposition of the monitor's metrics, for the server's `/metrics` endpoint.

    from models.monitoring.prometheus import CONTENT_TYPE, REGISTRY, exposition
    body = exposition()          # bytes in the Prometheus text format (version 0.0.4)

`REGISTRY` is this package's own `prometheus_client.CollectorRegistry` (not the global one), so
a server can mount it (`prometheus_client.make_asgi_app(registry=REGISTRY)`) or merge it. Labels
are `category`, `model`, `version`, `engine` (and `outcome`): never user ids. Histograms and
counters are fed by the event writer as it writes each batch (so per process, since start);
the evaluation gauges and the writer's own counters are read when scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from models.monitoring.events import GenerationEvent

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "REGISTRY", "TTFT_BUCKETS", "exposition", "observe"]

CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Whole responses: a few ms (a cached short reply) to minutes (a long reply from a big remote model).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
#: First token: prefill of a local model takes ms; a loaded remote server can take seconds.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REGISTRY = CollectorRegistry(auto_describe=False)  # no scrape-time work at import
_LABELS = ("category", "model", "version", "engine")

GENERATION_LATENCY = Histogram(
    "companion_generation_latency_seconds",
    "Wall time of one generation request, from the call to the last token.",
    _LABELS,
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "companion_time_to_first_token_seconds",
    "Time from the request to its first generated text.",
    _LABELS,
    buckets=TTFT_BUCKETS,
    registry=REGISTRY,
)
GENERATIONS = Counter(
    "companion_generations",
    "Generation requests, by outcome (ok, error, cancelled).",
    (*_LABELS, "outcome"),
    registry=REGISTRY,
)
COMPLETION_TOKENS = Counter("companion_completion_tokens", "Tokens generated.", _LABELS, registry=REGISTRY)
PROMPT_TOKENS = Counter("companion_prompt_tokens", "Prompt tokens processed.", _LABELS, registry=REGISTRY)


def observe(events: Iterable[GenerationEvent]) -> None:
    """Add a batch of events to the histograms and counters (called by the event writer)."""
    for e in events:
        labels = (e.category, e.name, e.version or "unversioned", e.engine)
        outcome = "error" if e.error else "cancelled" if e.finish_reason == "cancelled" else "ok"
        GENERATIONS.labels(*labels, outcome).inc()
        if e.error:
            continue
        GENERATION_LATENCY.labels(*labels).observe(e.latency_s)
        if e.ttft_s is not None:
            TIME_TO_FIRST_TOKEN.labels(*labels).observe(e.ttft_s)
        if e.completion_tokens:
            COMPLETION_TOKENS.labels(*labels).inc(e.completion_tokens)
        if e.prompt_tokens:
            PROMPT_TOKENS.labels(*labels).inc(e.prompt_tokens)


class _StateCollector(Collector):
    """Read at scrape time: the event writer's counters and the latest evaluation per model."""

    def collect(self) -> Iterator[Any]:
        from models.monitoring.events import get_recorder

        rec = get_recorder()
        c = CounterMetricFamily(
            "companion_monitor_events", "Generation events by what became of them.", labels=["state"]
        )
        c.add_metric(["written"], rec.written)
        c.add_metric(["dropped"], rec.dropped)
        c.add_metric(["failed"], rec.failed)
        yield c
        yield from self._evaluations()

    @staticmethod
    def _evaluations() -> Iterator[Any]:
        from sqlalchemy import func, select

        from models import db

        t = db.evaluation_runs
        acc = GaugeMetricFamily(
            "companion_eval_next_token_accuracy_ratio",
            "Next-token accuracy of the latest evaluation run (0-1).",
            labels=["category", "model", "version"],
        )
        ppl = GaugeMetricFamily(
            "companion_eval_perplexity",
            "Held-out perplexity of the latest evaluation run.",
            labels=["category", "model", "version"],
        )
        try:
            engine = db.connect()
            newest = select(func.max(t.c.id)).group_by(t.c.category, t.c.name, t.c.version).scalar_subquery()
            with engine.connect() as conn:
                rows = list(conn.execute(select(t).where(t.c.id.in_(newest))).mappings())
        except Exception:  # a scrape must not fail because the database is briefly unavailable
            rows = []
        for r in rows:
            labels = [r["category"], r["name"], r["version"] or "unversioned"]
            acc.add_metric(labels, r["next_token_accuracy"])
            ppl.add_metric(labels, r["perplexity"])
        yield acc
        yield ppl


REGISTRY.register(_StateCollector())


class _Visible(Collector):
    """The registry's families with only the series of models `visible(category, model)` allows."""

    def __init__(self, visible: Callable[[str, str], bool]) -> None:
        self.visible = visible

    def collect(self) -> Iterator[Any]:
        for family in REGISTRY.collect():
            kept = [
                s
                for s in family.samples
                if "category" not in s.labels or self.visible(s.labels["category"], s.labels.get("model", ""))
            ]
            family.samples = kept
            yield family


def exposition(flush: bool = True, visible: Callable[[str, str], bool] | None = None) -> bytes:
    """The `/metrics` body (serve it with `CONTENT_TYPE`). Queued events are written first.
    With `visible`, series of models it refuses are left out (a caller sees the models it may read)."""
    if flush:
        from models.monitoring.events import get_recorder

        get_recorder().flush()
    if visible is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Visible(visible))
    return generate_latest(registry)
