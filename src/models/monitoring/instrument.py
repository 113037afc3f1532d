"""Instrumenting loaded models: every generation becomes one `GenerationEvent`.

`ModelManager.load_model` calls `attach(model, category, name, version)` on each model it
builds. What that does depends on the model:

* a **generator** (`TransformerModel`: has `engine`, `stream` and `stream_chat`): its `stream`
  and `stream_chat` are wrapped (on the instance, the class is untouched); `generate` and `chat`
  go through them. One event per call: latency from the call to the last piece, time to first
  token from the call to the first non-empty piece, token counts and finish reason from the
  engine's `last_stats`.
* any **composite** model (a personality, a personalization model): its public request methods
  (`generate_response`, `stream_response`, ...) open a *request scope*; the generator(s) it
  uses inside (its `base`, instrumented too) report into that scope instead of recording
  their own events, so a best-of-4 reply is one request of `luna` with four generations'
  tokens, not four requests of the base model.

Per piece the cost is one generator hop; per request a handful of `perf_counter` calls and a
queue append (see `bench/monitor.py` for the measured overhead). Nothing here touches I/O.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from models.monitoring.events import EventRecorder, GenerationEvent, current_user, get_recorder, pseudonymize

__all__ = ["REQUEST_METHODS", "attach", "is_attached", "label_of", "recording_suspended"]

#: Public methods of composite models that make one request each (those that exist are wrapped).
REQUEST_METHODS = (
    "generate_response",
    "stream_response",
    "generate_personalized_response",
    "adapt_response",
    "adapt",
    "generate",
    "chat",
    "stream",
    "stream_chat",
)
_LEAF_METHODS = ("stream", "stream_chat")
_ATTR = "_companion_monitor"
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


# --------------------------------------------------------------------------- generators (leaves)


def _leaf(model: Any, orig: Callable[..., Iterator[str]], label: tuple[str, str, str | None] | None) -> Callable:
    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[str]:
        user = _user_from(kwargs)
        return _leaf_stream(model, orig(*args, **kwargs), label, user)

    return wrapper


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
        engine = getattr(model, "engine_name", None) or getattr(getattr(model, "engine", None), "name", "unknown")
        if outer is None:
            request.t0 = t0
        request.add(first, engine, getattr(model, "last_stats", None), finish)
        if outer is None:
            event = request.event(perf(), recorder, error)
            if event is not None:
                recorder.record(event)


# --------------------------------------------------------------------------- composites (scopes)


def _scoped(orig: Callable[..., Any], label: tuple[str, str, str | None]) -> Callable:
    @functools.wraps(orig)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _SCOPE.get() is not None:  # nested inside another request: it reports to that one
            return orig(*args, **kwargs)
        recorder = get_recorder()
        request = _Request(label, _user_from(kwargs), recorder.clock.perf())
        token = _SCOPE.set(request)
        try:
            result = orig(*args, **kwargs)
        except BaseException as exc:
            _finish(request, recorder, _error_name(exc))
            raise
        finally:
            _SCOPE.reset(token)
        if isinstance(result, Iterator):
            return _scoped_stream(result, request, recorder)
        _finish(request, recorder, None)
        return result

    return wrapper


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


def _is_generator(model: Any) -> bool:
    return all(callable(getattr(model, m, None)) for m in _LEAF_METHODS) and hasattr(model, "engine")


def _wrap_leaf(model: Any, label: tuple[str, str, str | None] | None) -> None:
    state = getattr(model, _ATTR, None)
    if state is not None and (state == label or label is None):
        return  # already instrumented (a shared base keeps the label it was loaded under)
    for method in _LEAF_METHODS:
        orig = getattr(type(model), method).__get__(model)
        setattr(model, method, _leaf(model, orig, label))
    setattr(model, _ATTR, label)


def attach(model: Any, category: str, name: str, version: str | None = None) -> Any:
    """Instrument `model` so its generations are recorded as `category/name` at `version`
    (default: the model's own `version` attribute, if any). Returns `model`. Idempotent.
    A model with no generation methods, or one that takes no attributes, is returned as is."""
    version = version or _version_of(model)
    label = (category, name, version)
    try:
        if _is_generator(model):
            _wrap_leaf(model, label)
            return model
        if getattr(model, _ATTR, None) == label:
            return model
        methods = [m for m in REQUEST_METHODS if callable(getattr(type(model), m, None))]
        if not methods:
            return model
        for method in methods:
            setattr(model, method, _scoped(getattr(type(model), method).__get__(model), label))
        for attr in ("base", "base_model", "model"):
            inner = getattr(model, attr, None)
            if inner is not None and _is_generator(inner):
                _wrap_leaf(inner, None)
        setattr(model, _ATTR, label)
    except (AttributeError, TypeError) as exc:  # __slots__, read-only attributes
        log.warning("monitoring: %s/%s (%s) cannot be instrumented: %s", category, name, type(model).__name__, exc)
    return model


def is_attached(model: Any) -> bool:
    return hasattr(model, _ATTR)


def label_of(model: Any) -> tuple[str, str, str | None] | None:
    """`(category, name, version)` the model's generations are recorded under (None: not attached)."""
    return getattr(model, _ATTR, None)


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
