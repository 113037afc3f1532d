"""`get_framework()`: the process-wide `Framework`, owner of the ModelManager and the plugins.

    from framework.framework_tool import get_framework

    framework = get_framework()
    personality_plugin = framework.get_plugin("personality_engine")
    response = personality_plugin.generate_response("romantic_conversation", "romantic")

Plugins come from one hook (`framework.hookspecs.register_plugins`), called on the built-in
plugin modules (`framework.plugins.BUILTIN_PLUGINS`) and on every module registered under the
entry-point group `companion.plugins`, in that order; the first registration of a name wins.
Model types and engines are not the framework's: the same modules' `register_model_types` and
`register_engines` hooks feed `models.plugins`, which every lookup loads by itself.
A plugin is built on first `get_plugin` and kept. A third-party plugin that fails to import
is reported by `get_plugin` and `failed_plugins`, never fatal to the rest.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

from framework import hookspecs
from framework.plugins import BUILTIN_PLUGINS
from models.errors import PluginError
from models.plugins import ENTRY_POINT_GROUP, add_plugin

__all__ = ["ENTRY_POINT_GROUP", "Framework", "PluginInfo", "get_framework", "reset_framework"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    source: str
    """`builtin:<module>` or `entrypoint:<distribution>:<entry point>`."""
    loaded: bool


class Framework:
    """Owns the `ModelManager` and the plugin registry."""

    def __init__(
        self,
        model_manager: Any = None,
        *,
        load_entrypoints: bool = True,
        extra_plugins: Iterable[Any] = (),
    ) -> None:
        if model_manager is None:
            from models.personality.loader import shared_manager

            model_manager = shared_manager()
        self.model_manager = model_manager
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self._factories: dict[str, tuple[Callable[..., Any], str]] = {}
        self._instances: dict[str, Any] = {}
        self._lock = threading.RLock()
        self.failed_plugins: dict[str, str] = {}
        self._sources: dict[int, str] = {}
        for module_name in BUILTIN_PLUGINS:
            self._add(importlib.import_module(module_name), f"builtin:{module_name}")
        if load_entrypoints:
            self._load_entrypoints()
        for plugin in extra_plugins:
            self._add(plugin, f"extra:{getattr(plugin, '__name__', type(plugin).__name__)}")
            add_plugin(plugin)  # its model types and engines go to the one registry (models.plugins)
        self._collect()

    # --- registration -------------------------------------------------------------------------

    def _add(self, plugin: Any, source: str) -> None:
        if self.pm.is_registered(plugin):
            return
        self.pm.register(plugin, name=source)
        self._sources[id(plugin)] = source

    def _load_entrypoints(self) -> None:
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", "?")
            source = f"entrypoint:{dist}:{ep.name}"
            try:
                self._add(ep.load(), source)
            except Exception as exc:  # a broken third-party plugin must not take the others down
                self.failed_plugins[ep.name] = f"{source}: {type(exc).__name__}: {exc}"
                log.warning("plugin %s failed to load: %s", ep.name, exc)

    def _collect(self) -> None:
        for impl in self.pm.hook.register_plugins.get_hookimpls():
            source = self._sources.get(id(impl.plugin), impl.plugin_name)

            def register(name: str, factory: Callable[..., Any], _source: str = source) -> None:
                self.register_plugin(name, factory, source=_source)

            kwargs = {"register": register, "framework": self}
            impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})

    def register_plugin(self, name: str, factory: Callable[..., Any], *, source: str = "code") -> None:
        """Add a plugin by name (a class or factory, built on first use). First name wins."""
        with self._lock:
            if name in self._factories:
                log.warning(
                    "plugin %r from %s ignored: already registered by %s", name, source, self._factories[name][1]
                )
                return
            self._factories[name] = (factory, source)

    # --- access -------------------------------------------------------------------------------

    def get_plugin(self, name: str) -> Any:
        """The plugin `name`, built on first use; PluginError listing the known ones otherwise."""
        with self._lock:
            if name in self._instances:
                return self._instances[name]
            if name not in self._factories:
                import difflib

                known = sorted(self._factories)
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                failed = f" Failed to load: {'; '.join(self.failed_plugins.values())}." if self.failed_plugins else ""
                raise PluginError(
                    f"unknown plugin {name!r}.{hint} Known plugins: {', '.join(known) or 'none'}.{failed}"
                )
            factory, source = self._factories[name]
            try:
                instance = _build(factory, self)
            except Exception as exc:
                raise PluginError(f"plugin {name!r} ({source}) failed to start: {exc}") from exc
            self._instances[name] = instance
            return instance

    def list_plugins(self) -> list[PluginInfo]:
        with self._lock:
            return [PluginInfo(n, src, n in self._instances) for n, (_f, src) in sorted(self._factories.items())]

    def plugin_names(self) -> list[str]:
        return sorted(self._factories)


def _build(factory: Callable[..., Any], framework: Framework) -> Any:
    """`factory(framework=...)` when it takes a `framework` argument, else `factory()`."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    if "framework" in params:
        return factory(framework=framework)
    return factory()


_FRAMEWORK: dict[str, Framework] = {}
_LOCK = threading.Lock()


def get_framework() -> Framework:
    """The process-wide framework (created on first call)."""
    with _LOCK:
        if "f" not in _FRAMEWORK:
            _FRAMEWORK["f"] = Framework()
        return _FRAMEWORK["f"]


def reset_framework() -> None:
    """Forget the process-wide framework (tests; after installing a plugin)."""
    with _LOCK:
        _FRAMEWORK.pop("f", None)
