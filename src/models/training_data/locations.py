"""Where training data lives: shipped package data, COMPANION_HOME, and the seed's paths.

Path forms (data sources, CLI arguments and `resolve_training_data`):

* `builtin:<rel>`   data shipped inside the package, under `models/training_data/` (read-only);
                    `builtin:writing_samples` is short for `builtin:writing_assistant/writing_samples`
* `home:<rel>`      a path inside `COMPANION_HOME` (e.g. `home:data/discord`)
* anything else     a file or folder; relative paths resolve against `base_dir` (the config
                    file's folder) or the working directory

The seed's training paths name shipped data when no such folder exists on disk:

* `models/training_data/personality_data` → the character dialogue and sheets
  (`writing_assistant/character_data`): what a personality model is tuned on;
* `models/training_data/user_data`        → `user_data/`: a sample user's writing and feedback
  on suggestions, the stand-in for a real user's data in personalization recipes;
* `models/training_data/writing_assistant[/<part>]` → the shipped folders themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from models.errors import DataError

__all__ = [
    "SHIPPED_PARTS",
    "ResolvedData",
    "data_root",
    "resolve_location",
    "resolve_training_data",
    "shipped_dir",
]

#: The four folders of the seed's `writing_assistant/` and what they hold.
SHIPPED_PARTS = {
    "writing_samples": "writing",
    "conversation_data": "conversations",
    "character_data": "characters",
    "style_data": "style",
}

_SEED_ALIASES = {
    "personality_data": ("writing_assistant/character_data", "characters"),
    "user_data": ("user_data", "user"),
    "writing_assistant": ("writing_assistant", "writing_assistant"),
}


def data_root() -> Path:
    """The package folder `models/training_data/` that holds the shipped data."""
    return Path(str(resources.files("models") / "training_data"))


def shipped_dir(part: str = "") -> Path:
    """`writing_assistant/<part>` inside the package (the folder itself when `part` is empty)."""
    root = data_root() / "writing_assistant"
    return root / part if part else root


def resolve_location(raw: str | Path, base_dir: str | Path | None = None) -> Path:
    """Turn a path form (see the module docstring) into a filesystem path; it may not exist."""
    text = str(raw)
    if text.startswith("builtin:"):
        rel = text.split(":", 1)[1].strip("/")
        direct = data_root() / rel
        if direct.exists() or not rel:
            return direct
        return shipped_dir(rel)
    if text.startswith("home:"):
        from models.home import companion_home

        return companion_home() / text.split(":", 1)[1].lstrip("/")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = Path(base_dir or Path.cwd()) / path
    return path


@dataclass(frozen=True)
class ResolvedData:
    """What a training-data path names: a folder on disk and the kind of data in it."""

    path: Path
    kind: str  # writing | conversations | characters | style | user | writing_assistant | dataset | files
    shipped: bool
    raw: str

    def describe(self) -> str:
        where = "shipped with the package" if self.shipped else "on disk"
        return f"{self.raw!r} → {self.path} ({self.kind}, {where})"


def _kind_of(path: Path) -> str:
    if (path / "dataset.json").exists():
        return "dataset"
    return SHIPPED_PARTS.get(path.name, "files")


def resolve_training_data(path: str | Path, base_dir: str | Path | None = None) -> ResolvedData:
    """Resolve a training-data path as the trainer and the CLI see it.

    An existing file or folder always wins; otherwise the seed's `models/training_data/...`
    forms name the shipped data (see the module docstring). Raises `DataError` naming what was
    tried when nothing matches.
    """
    raw = str(path)
    if raw.startswith(("builtin:", "home:")):
        found = resolve_location(raw, base_dir)
        if not found.exists():
            raise DataError(f"training data {raw!r} does not exist (looked for {found})")
        return ResolvedData(found, _kind_of(found), raw.startswith("builtin:"), raw)
    direct = resolve_location(raw, base_dir)
    if direct.exists():
        return ResolvedData(direct, _kind_of(direct), False, raw)
    parts = Path(raw.replace("\\", "/")).parts
    if "training_data" in parts:
        rest = list(parts[parts.index("training_data") + 1 :])
        if rest and rest[0] in _SEED_ALIASES:
            rel, kind = _SEED_ALIASES[rest[0]]
            found = data_root() / rel / Path(*rest[1:]) if len(rest) > 1 else data_root() / rel
            if found.exists():
                kind = _kind_of(found) if len(rest) > 1 else kind
                return ResolvedData(found, kind, True, raw)
    known = ", ".join(f"models/training_data/{k}" for k in _SEED_ALIASES)
    raise DataError(
        f"training data {raw!r} does not exist (looked for {direct}); shipped data is available as {known}, "
        "or pass a folder, a saved dataset, or a named data source"
    )
