"""Fixtures for the operations tests: a scripted clock, a scripted engine, a fresh recorder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.engines.base import Engine, GenerationStats, SamplingParams
from models.monitoring.events import Clock, EventRecorder, set_recorder

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class ScriptedClock(Clock):
    """Time moves only when told: `advance(seconds)` moves both `now()` and `perf()`."""

    def __init__(self, start: datetime = T0) -> None:
        self.start = start
        self.offset = 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.offset)

    def perf(self) -> float:
        return self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def jump_to(self, moment: datetime) -> None:
        self.offset = (moment - self.start).total_seconds()


class ScriptedEngine(Engine):
    """Yields `tokens` pieces; the first after `ttft` seconds of scripted time, each next one
    after `step` more. Set `plan = (ttft, step, tokens)` before each call."""

    name = "scripted"

    def __init__(self, clock: ScriptedClock) -> None:
        super().__init__()
        self.clock = clock
        self.plan = (0.0625, 0.125, 3)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        ttft, step, tokens = self.plan
        stats = GenerationStats(prompt_tokens=len(prompt.split()))
        self.last_stats = stats
        for i in range(tokens):
            self.clock.advance(ttft if i == 0 else step)
            stats.completion_tokens += 1
            yield f" w{i}"
        stats.finish_reason = "length"

    def stream_chat(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> Iterator[str]:
        return self.stream(" ".join(m["content"] for m in messages), params)

    def score(self, texts: Sequence[str]) -> list[float]:
        return [0.0 for _ in texts]


@pytest.fixture
def clock() -> ScriptedClock:
    return ScriptedClock()


@pytest.fixture
def recorder(clock: ScriptedClock) -> Iterator[EventRecorder]:
    """A fresh process recorder on the scripted clock for the test."""
    rec = EventRecorder(clock=clock, flush_interval=60.0)
    set_recorder(rec)
    yield rec
    set_recorder(EventRecorder())  # a real-clock one again (this one is flushed and stopped)


@pytest.fixture
def tiny_config(user_config: Any) -> Any:
    return user_config("models:\n  base:\n    tiny: {type: transformer, path: '{tiny}'}\n")


@pytest.fixture
def scripted_model(tiny_config: Any, clock: ScriptedClock, recorder: EventRecorder) -> Any:
    """`base/tiny` loaded through ModelManager (so instrumented), its engine scripted."""
    from models.model_manager import ModelManager

    manager = ModelManager()
    model = manager.load_model("base", "tiny")
    model.engine = ScriptedEngine(clock)
    model.manager = manager
    return model
