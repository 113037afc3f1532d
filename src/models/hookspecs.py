"""The plugin hooks of the model layer (pluggy, project "companion").

A plugin is a module with `@hookimpl` functions, installed through the entry-point group
`companion.plugins`; the built-in model types and engines (`models.builtin_plugins`) register
through these same hooks::

    # pyproject.toml of a third-party package
    [project.entry-points."companion.plugins"]
    my_plugin = "my_package.companion_plugin"

    # my_package/companion_plugin.py
    from models.hookspecs import hookimpl

    @hookimpl
    def register_model_types(register):
        register("my_type", MyParams, load_my_model)      # loader(manager, request) -> model

    @hookimpl
    def register_engines(register):
        register("my_engine", MyEngine, supports=lambda ref, params: ref.raw.endswith(".my"))

`framework.hookspecs` adds `register_plugins` (the framework's named plugins) to the same project.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "companion"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_model_types(register: Any) -> None:
    """Call `register(type_name, ParamsModel, loader)` for each model type: `loader(manager,
    request)` builds the model (or a "module:function" string, imported on first use)."""


@hookspec
def register_engines(register: Any) -> None:
    """Call `register(name, factory, supports=..., priority=50)` for each generation engine:
    `factory(ref, params, adapter)` builds it; `supports(ref, params)` says whether `engine: auto`
    may pick it for a path (asked in priority order, lowest first)."""
