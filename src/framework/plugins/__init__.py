"""Built-in framework plugins, registered through the same hook as third-party ones.

Each module listed in `BUILTIN_PLUGINS` implements `framework.hookspecs.register_plugins`.
"""

from __future__ import annotations

__all__ = ["BUILTIN_PLUGINS"]

#: Modules whose `register_plugins` hook is called before third-party entry points.
BUILTIN_PLUGINS: list[str] = ["framework.plugins.personality_engine", "framework.plugins.personalization_engine"]
