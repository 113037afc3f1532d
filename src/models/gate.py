"""The one door every generation of a model goes through: access check, monitoring, nesting.

Each model class marks its public generating methods with `@generating` (`TransformerModel`'s
`generate`, `stream`, `chat`, `generate_many`, ...; a personality's `generate_response`, ...).
A call to any of them runs `_enter`, which, in this order:

1. checks `generate` on the model's resource for the acting user, when the model was loaded
   through a policy (`ModelManager.load_model` calls `guard`), unless the call is nested inside
   an already-checked one (a personality's best-of-4 checks once, not five times);
2. opens one monitoring request (`models.monitoring.instrument.observe`): a composite model's
   inner generations report into it, so one reply is one event;
3. marks everything it runs (and every piece a stream yields) as inside a checked call.

What a model holds that could generate without that door (a `TransformerModel`'s engine, a
personality's base model) is reached through `checked_attribute`, which performs the same check
first. So a method added later is covered as soon as it is marked, and one that is not marked
cannot reach an engine without a check: the enumeration test in
`tests/security/test_gate.py` proves both for every class the manager can return.

A model built directly (the seed's `TransformerModel(model_path=...)`) has no policy: nobody
loaded it on anyone's behalf, as with `transformers` itself.

Third-party model classes that mark nothing are adopted at load time (`adopt`): their methods
named in `REQUEST_METHODS` are routed through the same `_enter` on the instance.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "GENERATING",
    "REQUEST_METHODS",
    "Gate",
    "adopt",
    "checked_attribute",
    "gate_of",
    "generating",
    "generating_methods",
    "guard",
    "inside_checked_call",
    "is_inside",
]

GENERATING = "__companion_generating__"
_GATE = "_companion_gate"
#: Method names a third-party class that marks nothing is adopted under (see `adopt`).
REQUEST_METHODS = (
    "generate",
    "stream",
    "chat",
    "stream_chat",
    "generate_many",
    "chat_many",
    "generate_response",
    "stream_response",
    "generate_personalized_response",
    "adapt_response",
    "adapt",
)

_INSIDE: contextvars.ContextVar[bool] = contextvars.ContextVar("companion_checked_call", default=False)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Gate:
    """What a model's door checks: the policy and resource (`personality/luna`), and the
    monitoring label `(category, name, version)`. Either may be unset."""

    security: Any = None
    resource: str | None = None
    label: tuple[str, str, str | None] | None = None

    def check(self, action: str) -> None:
        if self.security is not None and self.resource is not None and not _INSIDE.get():
            # The acting user only (acting_as / $COMPANION_USER / local owner): a call's `user=`
            # keyword names a persona or whose preferences to use, never who is asking.
            self.security.require(None, self.resource, "generate", action=action)


def is_inside() -> bool:
    """Whether the current code runs inside an already-checked generation."""
    return _INSIDE.get()


@contextlib.contextmanager
def inside_checked_call() -> Iterator[None]:
    """Mark the block as part of an already-checked request (nested models are not re-checked)."""
    token = _INSIDE.set(True)
    try:
        yield
    finally:
        _INSIDE.reset(token)


def gate_of(model: Any) -> Gate:
    """The model's gate (created empty on first use; stored on the instance)."""
    gate = getattr(model, _GATE, None)
    if gate is None:
        gate = Gate()
        try:
            object.__setattr__(model, _GATE, gate)
        except (AttributeError, TypeError):  # __slots__ or a builtin: nothing of ours to guard
            if any(callable(getattr(model, m, None)) for m in REQUEST_METHODS):
                from models.errors import ModelError

                raise ModelError(
                    f"{type(model).__name__} has generating methods but takes no attributes, so its calls "
                    "cannot be checked; give the class a __dict__ or mark its methods with models.gate.generating"
                ) from None
    return gate


def _inside_iter(it: Iterator[Any]) -> Iterator[Any]:
    while True:
        token = _INSIDE.set(True)
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            _INSIDE.reset(token)
        yield item


def _enter(
    model: Any,
    method: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    monitored: bool = True,
) -> Any:
    from models.monitoring.instrument import observe

    gate = getattr(model, _GATE, None)
    if gate is not None:
        gate.check(method)
    token = _INSIDE.set(True)
    try:
        if monitored:
            result = observe(model, method, lambda: fn(*args, **kwargs), kwargs, gate.label if gate else None)
        else:
            result = fn(*args, **kwargs)
    finally:
        _INSIDE.reset(token)
    if isinstance(result, Iterator) and not isinstance(result, str | bytes):
        return _inside_iter(result)
    return result


def generating(fn: F | None = None, *, monitored: bool = True) -> Any:
    """Mark a public method as generating: every call goes through the model's gate.
    `@generating(monitored=False)` checks access without recording traffic (`score`: the model
    reads text, it does not answer anyone)."""

    def mark(fn: F) -> F:
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            return _enter(self, name, functools.partial(fn, self), args, kwargs, monitored)

        setattr(wrapper, GENERATING, True)
        return wrapper  # type: ignore[return-value]

    return mark(fn) if fn is not None else mark


def generating_methods(cls: type) -> list[str]:
    """Names of the methods `cls` marks as generating."""
    return sorted(n for n in dir(cls) if getattr(getattr(cls, n, None), GENERATING, False))


def checked_attribute(model: Any, action: str) -> None:
    """Check `generate` before handing out something that generates without the door."""
    gate = getattr(model, _GATE, None)
    if gate is not None:
        gate.check(action)


def adopt(model: Any) -> Any:
    """Route a third-party model's request methods through the gate (only for classes that mark
    no method as generating; ours all do). Idempotent."""
    if generating_methods(type(model)) or getattr(model, "_companion_adopted", False):
        return model
    for method in REQUEST_METHODS:
        fn = getattr(model, method, None)
        if callable(fn):
            bound = functools.partial(_enter, model, method, fn)
            with contextlib.suppress(AttributeError, TypeError):
                setattr(model, method, functools.wraps(fn)(lambda *a, _b=bound, **k: _b(a, k)))
    with contextlib.suppress(AttributeError, TypeError):
        # Our own marker on the adopted object (not another module's private state).
        model._companion_adopted = True  # noqa: SLF001
    return model


def guard(model: Any, security: Any, category: str, name: str) -> Any:
    """Make the model's door check `generate` on `category/name` under `security`."""
    adopt(model)
    gate = gate_of(model)
    gate.security, gate.resource = security, f"{category}/{name}"
    return model
