"""Where the user's state lives: `COMPANION_HOME`.

`COMPANION_HOME` (environment variable, or `--home` on the CLI, which sets it) chooses the
folder; by default the platform data folder (`~/.local/share/companion` on Linux). Inside:

    config.yaml      the user's `models:` section (overrides the built-in config)
    store/           immutable model versions: store/<category>/<name>/<version>/
    companion.db     SQLite metadata (versions, aliases, events, ...)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["companion_home", "config_path", "database_path", "store_root"]

ENV_VAR = "COMPANION_HOME"


def companion_home(create: bool = True) -> Path:
    """The active home folder (created on first use unless `create=False`)."""
    raw = os.environ.get(ENV_VAR)
    if raw:
        home = Path(raw).expanduser()
    else:
        import platformdirs

        home = Path(platformdirs.user_data_dir("companion", appauthor=False))
    home = home.resolve()
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home


def config_path(home: Path | None = None) -> Path:
    return (home or companion_home()) / "config.yaml"


def store_root(home: Path | None = None) -> Path:
    return (home or companion_home()) / "store"


def database_path(home: Path | None = None) -> Path:
    return (home or companion_home()) / "companion.db"
