"""Instrumenting loaded models: every generation becomes one `GenerationEvent`.

`ModelManager.load_model` calls `attach(model, category, name, version)` on each model it
builds: that sets the monitoring label of the model's gate (`models.gate`). Every generating
method of every model goes through the gate, which calls `observe` here:

* a **generator**'s streaming leaves (`TransformerModel.stream` / `stream_chat`) record one
  event per call: latency from the call to the last piece, time to first token from the call
  to the first non-empty piece, token counts and finish reason from the engine's `last_stats`;
* any other generating method (`generate`, `generate_many`, a personality's
  `generate_response`, ...) opens a *request scope*; the generations it makes inside (its own
  `stream`, a personality's base model) report into that scope instead of recording their own
  events, so a best-of-4 reply is one request of `luna` with four generations' tokens, not
  four requests of the base model.

Per piece the cost is one generator hop; per request a handful of `perf_counter` calls and a
queue append (see `bench/monitor.py` for the measured overhead). Nothing here touches I/O.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from models.monitoring.events import EventRecorder, GenerationEvent, current_user, get_recorder, pseudonymize

__all__ = ["attach", "is_attached", "label_of", "observe", "recording_suspended"]

_LEAF_METHODS = ("stream", "stream_chat")
log = logging.getLogger(__name__)


@dataclass
class _Request:
    """One request in progress: what its generations reported so far."""

    label: tuple[str, str, str | None] | None
    user: str | None
    t0: float
    first: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    engine: str | None = None
    finish_reason: str = "length"
    generations: int = 0

    def add(self, first: float | None, engine: str, stats: Any, finish: str) -> None:
        if first is not None and (self.first is None or first < self.first):
            self.first = first
        self.prompt_tokens += int(getattr(stats, "prompt_tokens", 0) or 0)
        self.completion_tokens += int(getattr(stats, "completion_tokens", 0) or 0)
        self.engine = self.engine or engine
        self.finish_reason = finish
        self.generations += 1

    def event(self, end: float, recorder: EventRecorder, error: str | None) -> GenerationEvent | None:
        if self.label is None:
            return None
        category, name, version = self.label
        return GenerationEvent(
            category=category,
            name=name,
            version=version,
            engine=self.engine or "unknown",
            latency_s=max(0.0, end - self.t0),
            ttft_s=None if self.first is None else max(0.0, self.first - self.t0),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            finish_reason="error" if error else self.finish_reason,
            user_hash=pseudonymize(self.user),
            error=error,
            at=recorder.now(),
        )


_SCOPE: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("companion_request", default=None)


def _user_from(kwargs: dict[str, Any]) -> str | None:
    user = kwargs.get("user_id", kwargs.get("user"))
    return user if isinstance(user, str) and user else current_user()


def _error_name(exc: BaseException) -> str | None:
    if isinstance(exc, GeneratorExit):
        return None
    return type(exc).__name__


# --------------------------------------------------------------------------- observe


def _leaf_stream(model: Any, pieces: Iterator[str], label: Any, user: str | None) -> Iterator[str]:
    recorder = get_recorder()
    perf = recorder.clock.perf
    outer = _SCOPE.get()
    request = outer if outer is not None else _Request(label, user, perf())
    t0 = perf()
    first: float | None = None
    finish = "length"
    error: str | None = None
    try:
        for piece in pieces:
            if first is None and piece:
                first = perf()
            yield piece
        finish = getattr(getattr(model, "last_stats", None), "finish_reason", "length") or "length"
    except BaseException as exc:
        error = _error_name(exc)
        finish = "error" if error else "cancelled"
        raise
    finally:
        if outer is None:
            request.t0 = t0
        request.add(first, _engine_name(model), getattr(model, "last_stats", None), finish)
        if outer is None:
            event = request.event(perf(), recorder, error)
            if event is not None:
                recorder.record(event)


def _engine_name(model: Any) -> str:
    return str(getattr(model, "engine_name", None) or "unknown")


def observe(
    model: Any,
    method: str,
    call: Callable[[], Any],
    kwargs: dict[str, Any],
    label: tuple[str, str, str | None] | None,
) -> Any:
    """Run one generating call of `model` (the gate's step 2): a streaming leaf records its own
    event or reports into the enclosing request; any other call opens a request scope."""
    outer = _SCOPE.get()
    if label is None and outer is None:
        return call()  # nobody to report to
    if method in _LEAF_METHODS and hasattr(model, "last_stats"):
        return _leaf_stream(model, call(), label, _user_from(kwargs))
    if outer is not None:  # nested inside another request: it reports to that one
        return call()
    recorder = get_recorder()
    request = _Request(label, _user_from(kwargs), recorder.clock.perf())
    token = _SCOPE.set(request)
    try:
        result = call()
    except BaseException as exc:
        _finish(request, recorder, _error_name(exc))
        raise
    finally:
        _SCOPE.reset(token)
    if isinstance(result, Iterator):
        return _scoped_stream(result, request, recorder)
    if request.generations == 0 and hasattr(model, "last_stats"):  # a batch decode (generate_many)
        stats = model.last_stats
        request.add(None, _engine_name(model), stats, getattr(stats, "finish_reason", "length") or "length")
    _finish(request, recorder, None)
    return result


def _scoped_stream(pieces: Iterator[Any], request: _Request, recorder: EventRecorder) -> Iterator[Any]:
    error: str | None = None
    try:
        while True:
            token = _SCOPE.set(request)
            try:
                piece = next(pieces)
            except StopIteration:
                break
            finally:
                _SCOPE.reset(token)
            yield piece
    except BaseException as exc:
        error = _error_name(exc)
        if error is None:
            request.finish_reason = "cancelled"
        raise
    finally:
        _finish(request, recorder, error)


def _finish(request: _Request, recorder: EventRecorder, error: str | None) -> None:
    event = request.event(recorder.clock.perf(), recorder, error)
    if event is not None:
        recorder.record(event)


# --------------------------------------------------------------------------- attach


def attach(model: Any, category: str, name: str, version: str | None = None) -> Any:
    """Record `model`'s generations as `category/name` at `version` (default: the model's own
    `version` attribute, if any): sets the label of the model's gate. Returns `model`. Idempotent."""
    from models.gate import adopt, gate_of

    adopt(model)
    gate_of(model).label = (category, name, version or _version_of(model))
    return model


def is_attached(model: Any) -> bool:
    return label_of(model) is not None


def label_of(model: Any) -> tuple[str, str, str | None] | None:
    """`(category, name, version)` the model's generations are recorded under (None: not attached)."""
    gate = getattr(model, "_companion_gate", None)
    return gate.label if gate is not None else None


@contextlib.contextmanager
def recording_suspended() -> Iterator[None]:
    """Generations inside the block are not recorded (evaluation and optimizer measurements)."""
    token = _SCOPE.set(_Request(None, None, 0.0))
    try:
        yield
    finally:
        _SCOPE.reset(token)


def _version_of(model: Any) -> str | None:
    version = getattr(model, "version", None)
    if isinstance(version, str) and version:
        return version
    ref = getattr(model, "ref", None)
    version = getattr(ref, "version", None)
    return version if isinstance(version, str) and version else None
