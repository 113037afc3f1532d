"""Crash-safe file writes (temp file, fsync, `os.replace`) and the package version stamp."""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_folder", "atomic_path", "atomic_write_bytes", "atomic_write_json", "package_version"]

_SLUG = re.compile(r"[^a-z0-9_.-]+")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these files are ordinary data
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for a writer that wants a file name (e.g. a GGUF writer):
    renamed over `path` (after an fsync) when the block ends without an error, else removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """An empty staging folder beside `path` (`.NAME.partial`) for a writer of several files (a
    trained model and its manifest, a training checkpoint): put in place of `path` when the
    block ends without an error (the old folder moved aside to `.NAME.old` first, removed
    after), else removed, so a crash or a failed check midway leaves the previous folder as it
    was. A staging folder left by a killed process is cleared by the next write."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging, old = path.with_name(f".{path.name}.partial"), path.with_name(f".{path.name}.old")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(staging, path)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def optional_version(distribution: str, module: str) -> str | None:
    """The installed version of an optional dependency (an extra), or None when it is absent."""
    import importlib.util
    from importlib.metadata import PackageNotFoundError, version

    if importlib.util.find_spec(module) is None:
        return None
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("companion-models")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"
