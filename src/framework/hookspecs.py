"""The framework's plugin hooks (pluggy). Built-ins implement them exactly like third parties.

A plugin is a module or object with `@hookimpl` functions, registered through the Python
entry-point group `companion.plugins`::

    # pyproject.toml of a third-party package
    [project.entry-points."companion.plugins"]
    my_plugin = "my_package.companion_plugin"

    # my_package/companion_plugin.py
    from framework.hookspecs import hookimpl

    @hookimpl
    def register_plugins(register):
        register("my_engine", MyEngine)      # a class or zero-argument factory; built on first use
"""

from __future__ import annotations

from typing import Any

from models.hookspecs import PROJECT, hookimpl, hookspec, register_engines, register_model_types

__all__ = ["PROJECT", "hookimpl", "hookspec", "register_engines", "register_model_types"]


@hookspec
def register_plugins(register: Any, framework: Any) -> None:
    """Call `register(name, factory)` for each plugin; `factory(framework)` or `factory()` builds it."""
