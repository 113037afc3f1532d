"""The model layer's state for one home, built once at the edge and handed down.

A `Context` owns what every part of the layer runs on: the home folder, the config, the model
store, the metadata database and its version index, the security manager, the event recorder
and the model manager. The edges build one: the CLI's callback (`--home`), the server's
start-up, a test fixture (`context`), or code that wants an isolated home::

    from models.context import Context

    ctx = Context("/tmp/project-home")
    with ctx.activated():                       # what zero-argument APIs see, for this block
        model = ctx.manager.load_model("personality", "luna")

The seed's zero-argument APIs (`ModelManager()`, `TransformerModel(path)`, `load_personality(...)`)
are shims over `current()`: the context an edge activated, else the default one for the
environment (`COMPANION_HOME`, `COMPANION_DATABASE_URL`), rebuilt when those change. Nothing
below an edge rewrites `os.environ`.

The database URL is decided here once: an explicit `database_url`, else
`$COMPANION_DATABASE_URL`, else the config's `database_url:`, else `companion.db` in the home.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from models.config import EffectiveConfig
    from models.lifecycle.version_control import ModelVersionControl
    from models.lifecycle.version_index import VersionIndex
    from models.model_manager import ModelManager
    from models.security.manager import ModelSecurityManager
    from models.store import ModelStore

__all__ = ["HOME_ENV", "Context", "activated", "current", "reset_default_contexts"]

HOME_ENV = "COMPANION_HOME"
DATABASE_URL_ENV = "COMPANION_DATABASE_URL"


def _resolve_home(home: str | Path | None) -> Path:
    raw = str(home) if home is not None else os.environ.get(HOME_ENV)
    if raw:
        return Path(raw).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_data_dir("companion", appauthor=False)).resolve()


class Context:
    """One home's config, store, database, version index, security, recorder and manager.

    Parts are built on first use and kept; `home` is created when something first needs it."""

    def __init__(self, home: str | Path | None = None, *, database_url: str | None = None) -> None:
        self.home = _resolve_home(home)
        self._database_url = database_url or os.environ.get(DATABASE_URL_ENV) or None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Context(home={str(self.home)!r})"

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this context's state: (home, database URL as configured)."""
        return str(self.home), self._database_url or ""

    def ensure_home(self) -> Path:
        if not self.home.is_dir():  # one stat on the hot path, not a mkdir that fails
            self.home.mkdir(parents=True, exist_ok=True)
        return self.home

    # --- parts ---------------------------------------------------------------------------

    @cached_property
    def manager(self) -> ModelManager:
        """The model manager: names to models, with the config of this home."""
        from models.model_manager import ModelManager

        return ModelManager(context=self)

    @property
    def config(self) -> EffectiveConfig:
        """The built-in config with this home's `config.yaml` over it (re-read on change)."""
        return self.manager.config

    @property
    def database_url(self) -> str:
        return self.database_url_for(self.config)

    def database_url_for(self, config: EffectiveConfig) -> str:
        """The URL with `config` as the config layer (a manager with its own config file)."""
        if self._database_url:
            return self._database_url
        return config.config.database_url or f"sqlite:///{self.ensure_home() / 'companion.db'}"

    @property
    def database(self) -> Engine:
        """The metadata database, migrated to the newest schema."""
        from models import db

        return db.connect(self.database_url)

    @cached_property
    def store(self) -> ModelStore:
        from models.store import ModelStore

        return ModelStore(self.ensure_home())

    @property
    def versions(self) -> VersionIndex:
        from models.lifecycle.version_index import VersionIndex

        return VersionIndex.shared(self.database_url)

    @cached_property
    def security(self) -> ModelSecurityManager:
        from models.security.manager import ModelSecurityManager

        return ModelSecurityManager(manager=self.manager, database_url=self.database_url)

    @property
    def recorder(self) -> Any:
        """The process's event recorder (it writes each event to the database of the context
        active when the event was recorded)."""
        from models.monitoring.events import get_recorder

        return get_recorder()

    def version_control(self, user: str | None = None) -> ModelVersionControl:
        from models.lifecycle.version_control import ModelVersionControl

        return ModelVersionControl(self.home, database_url=self.database_url, user=user)

    # --- activation ----------------------------------------------------------------------

    @contextlib.contextmanager
    def activated(self) -> Iterator[Context]:
        """Make this the context zero-argument APIs use, until the block ends."""
        with activated(self):
            yield self


_ACTIVE: list[Context] = []
_DEFAULTS: dict[tuple[str | None, str | None], Context] = {}
_LOCK = threading.RLock()


@contextlib.contextmanager
def activated(ctx: Context) -> Iterator[Context]:
    """Activate `ctx` for the process until the block ends (an edge's start-up: the CLI's
    callback, `companion serve`). Activations nest; the innermost wins."""
    with _LOCK:
        _ACTIVE.append(ctx)
    try:
        yield ctx
    finally:
        with _LOCK:
            for i in range(len(_ACTIVE) - 1, -1, -1):
                if _ACTIVE[i] is ctx:
                    del _ACTIVE[i]
                    break


def current() -> Context:
    """The active context, else the default one for the environment as it is now."""
    with _LOCK:
        if _ACTIVE:
            return _ACTIVE[-1]
        key = (os.environ.get(HOME_ENV) or None, os.environ.get(DATABASE_URL_ENV) or None)
        ctx = _DEFAULTS.get(key)
        if ctx is None:
            ctx = _DEFAULTS[key] = Context()
        return ctx


def reset_default_contexts() -> None:
    """Forget the environment's default contexts and their cached models (tests)."""
    with _LOCK:
        _DEFAULTS.clear()
