"""Where the user's state lives: `COMPANION_HOME`.

The active `models.context.Context` chooses the folder: the one an edge built (`--home` on the
CLI), else `COMPANION_HOME`, else the platform data folder (`~/.local/share/companion` on
Linux). Inside:

    config.yaml      the user's `models:` section (overrides the built-in config)
    store/           immutable model versions: store/<category>/<name>/<version>/
    companion.db     SQLite metadata (versions, aliases, events, ...)
    keys/            the installation's secrets (mode 0600; `home_secret`)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["companion_home", "config_path", "database_path", "home_secret", "store_root"]

ENV_VAR = "COMPANION_HOME"


def companion_home(create: bool = True) -> Path:
    """The active context's home folder (created on first use unless `create=False`)."""
    from models.context import current

    ctx = current()
    return ctx.ensure_home() if create else ctx.home


def config_path(home: Path | None = None) -> Path:
    return (home or companion_home()) / "config.yaml"


def store_root(home: Path | None = None) -> Path:
    return (home or companion_home()) / "store"


def database_path(home: Path | None = None) -> Path:
    return (home or companion_home()) / "companion.db"


def home_secret(name: str, make: Callable[[], bytes], home: Path | None = None) -> bytes:
    """The bytes of `keys/<name>` (mode 0600), made by `make()` the first time.

    The new secret is written to a private temporary file, synced, then linked into place, so
    a reader never sees a half-written key; when processes race, the first link wins and every
    one of them reads the winner's key."""
    path = (home or companion_home()) / "keys" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name no other thread or process can hold (mkstemp: O_EXCL, mode 0600).
        fd, raw = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=path.parent)
        tmp = Path(raw)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(make())
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(FileExistsError):  # another process won the race: keep theirs
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path.read_bytes()
