"""What version control hands back: versions, alias moves, rollback results, verify reports.

Plain frozen dataclasses with `to_json()` for the CLI's `--json` and the server. A
`RollbackResult` is truthy only when the alias now points at the requested version, so the
seed's `rollback_success = version_control.rollback_version(...)` reads naturally.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import IntegrityError

__all__ = [
    "VERSION_FILE",
    "VERSION_FORMAT",
    "RollbackResult",
    "VerifyReport",
    "VersionInfo",
    "default_actor",
    "read_version_file",
    "write_json_atomic",
]

VERSION_FILE = "version.json"
VERSION_FORMAT = "companion-version/1"
ACTOR_ENV = "COMPANION_ACTOR"


def default_actor() -> str:
    """Who is acting: `$COMPANION_ACTOR`, else `user@host`."""
    env = os.environ.get(ACTOR_ENV)
    if env:
        return env
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to `path` through a fsynced temporary file and one `os.replace`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_version_file(folder: Path) -> dict[str, Any]:
    """The `version.json` of a published version ({} if it has none, e.g. a foreign folder)."""
    path = Path(folder) / VERSION_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} cannot be read: {exc}") from exc
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class VersionInfo:
    """One immutable version of a model."""

    category: str
    name: str
    version: str
    path: Path
    created_at: str
    author: str | None
    notes: str | None
    lineage: dict[str, Any]
    manifest_sha256: str | None
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def model(self) -> str:
        return f"{self.category}/{self.name}"

    @property
    def created(self) -> bool:
        """Always True: a VersionInfo is only returned for a version that exists."""
        return True

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        data["aliases"] = list(self.aliases)
        return data

    def __str__(self) -> str:
        return f"{self.model} {self.version}"


@dataclass(frozen=True)
class RollbackResult:
    """The outcome of moving an alias; falsy when nothing moved, with `reason` saying why."""

    success: bool
    model: str
    alias: str
    target_version: str | None
    from_version: str | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.success

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if self.success:
            return f"{self.model}: {self.alias} {self.from_version} -> {self.target_version}"
        return f"{self.model}: {self.alias} not moved to {self.target_version}: {self.reason}"


@dataclass(frozen=True)
class VerifyReport:
    """What `verify` checked and found; truthy when there are no problems."""

    checked: list[str]
    problems: list[str]
    unregistered: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __bool__(self) -> bool:
        return self.ok

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}
