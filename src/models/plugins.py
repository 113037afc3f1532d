"""One plugin registry for model types and engines, in simonw/llm's shape.

Every lookup (`get_loader`, `loader_types`, a config's parameter schema, `engine_names`,
`create_engine`'s choice) calls `load_plugins()` first, which, once per process, registers the
built-in plugin (`models.builtin_plugins`) and then every module of the entry-point group
`companion.plugins`, and collects their `register_model_types` / `register_engines` hooks
(`models.hookspecs`). So a plugin's model type works in a plain `ModelManager()`, in the CLI and
in `companion serve` alike, with nothing else to call. A plugin that fails to import is logged
and listed in `failed_plugins()`; it never takes the others down.

`register_loader(...)` adds a type from code (tests, notebooks), into the same registry.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from models import hookspecs

__all__ = [
    "ENTRY_POINT_GROUP",
    "EngineSpec",
    "add_plugin",
    "engines",
    "failed_plugins",
    "load_plugins",
    "model_types",
    "register_engine",
    "register_model_type",
    "reset_plugins",
]

ENTRY_POINT_GROUP = "companion.plugins"
BUILTIN = "models.builtin_plugins"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelTypeSpec:
    name: str
    params: type
    loader: Callable[..., Any] | str
    source: str


@dataclass(frozen=True)
class EngineSpec:
    name: str
    factory: Callable[..., Any]
    supports: Callable[[Any, Any], bool]
    priority: int
    source: str


_LOCK = threading.RLock()
_STATE: dict[str, Any] = {}


def _fresh() -> dict[str, Any]:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return {"pm": pm, "types": {}, "engines": {}, "failed": {}, "loaded": False, "extra": []}


def _state() -> dict[str, Any]:
    if not _STATE:
        _STATE.update(_fresh())
    return _STATE


def register_model_type(name: str, params: type, loader: Callable[..., Any] | str, *, source: str = "code") -> None:
    """Register (or replace) a model type: its parameter schema and its loader."""
    with _LOCK:
        _state()["types"][name] = ModelTypeSpec(name, params, loader, source)


def register_engine(
    name: str,
    factory: Callable[..., Any],
    *,
    supports: Callable[[Any, Any], bool] = lambda ref, params: False,
    priority: int = 50,
    source: str = "code",
) -> None:
    """Register (or replace) an engine; `supports` lets `engine: auto` pick it."""
    with _LOCK:
        _state()["engines"][name] = EngineSpec(name, factory, supports, priority, source)


def _collect(plugin: Any, source: str) -> None:
    pm = _state()["pm"]
    if pm.is_registered(plugin):
        return
    pm.register(plugin, name=source)
    for impl in pm.hook.register_model_types.get_hookimpls():
        if impl.plugin is plugin:
            impl.function(register=lambda n, p, loader, _s=source: register_model_type(n, p, loader, source=_s))
    for impl in pm.hook.register_engines.get_hookimpls():
        if impl.plugin is plugin:
            impl.function(register=lambda n, f, _s=source, **kw: register_engine(n, f, source=_s, **kw))


def load_plugins() -> None:
    """Register the built-in plugin and every installed one (once per process; thread-safe)."""
    state = _state()
    if state["loaded"]:
        return
    with _LOCK:
        if state["loaded"]:
            return
        _collect(importlib.import_module(BUILTIN), f"builtin:{BUILTIN}")
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            source = f"entrypoint:{dist}:{ep.name}"
            try:
                _collect(ep.load(), source)
            except Exception as exc:  # a broken third-party plugin must not take the others down
                state["failed"][ep.name] = f"{source}: {type(exc).__name__}: {exc}"
                log.warning("plugin %s failed to load: %s", ep.name, exc)
        for plugin, source in state["extra"]:
            _collect(plugin, source)
        state["loaded"] = True


def add_plugin(plugin: Any, source: str | None = None) -> None:
    """Register a plugin object or module from code (its hooks run now, and after a reset)."""
    source = source or f"extra:{getattr(plugin, '__name__', type(plugin).__name__)}"
    with _LOCK:
        _state()["extra"].append((plugin, source))
        if _state()["loaded"]:
            _collect(plugin, source)


def reset_plugins() -> None:
    """Forget every registration (tests; after installing a plugin in a running process)."""
    with _LOCK:
        _STATE.clear()


def model_types() -> dict[str, ModelTypeSpec]:
    load_plugins()
    return dict(_state()["types"])


def engines() -> list[EngineSpec]:
    """The registered engines, in the order `engine: auto` asks them."""
    load_plugins()
    return sorted(_state()["engines"].values(), key=lambda e: (e.priority, e.name))


def failed_plugins() -> dict[str, str]:
    load_plugins()
    return dict(_state()["failed"])
