"""The model store: immutable, manifest-checked version folders under `COMPANION_HOME/store`.

    store/<category>/<name>/<version>/   a published version: files + manifest.json, read-only
    store/<category>/<name>/.tmp-*       a staging folder being filled (flock-held while in use)
    store/<category>/<name>/.trash-*     a version being deleted
    store/<category>/<name>/.lock        the writers' lock file (`ModelStore.lock`)

Weights are safetensors only: pickles, torch zip archives and numpy files are refused by
`check_safe_files` without ever being loaded. Every version carries a `manifest.json` (sha256
and size of every file) that `verify_manifest` checks on load; hashes are cached in-process by
`stat` so a warm re-check costs one `stat` per file.

A version appears by one `os.rename` of a complete, fsynced staging folder that sits next to
it (same filesystem), so a crash at any instant leaves either no version or a complete one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from models.errors import (
    InvalidModelName,
    ModelNotFoundError,
    StoreError,
)
from models.home import companion_home, store_root
from models.integrity import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    _fsync_path,
    _walk_files,
    check_safe_files,
    hash_folder,
    verify_manifest,
    write_manifest,
)

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "NAME_PATTERN",
    "ModelStore",
    "check_safe_files",
    "hash_folder",
    "parse_version",
    "validate_name",
    "validate_version",
    "verify_manifest",
    "write_manifest",
]

NAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{0,63}"
SEMVER_PATTERN = r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9a-z-]+(?:\.[0-9a-z-]+)*))?"
_RESERVED_SUFFIXES = (".tmp", ".lock", ".trash")
_NAME_RE = re.compile(NAME_PATTERN)
_SEMVER_RE = re.compile(SEMVER_PATTERN)


# -- names and versions -----------------------------------------------------------------------


def validate_name(name: str, what: str = "model name") -> str:
    """Return `name` if it is a safe store name (`NAME_PATTERN`), else raise InvalidModelName."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidModelName(
            f"invalid {what} {name!r}: use 1-64 characters from a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit (no '/', no uppercase, no '..' paths)"
        )
    if name.endswith(_RESERVED_SUFFIXES):
        raise InvalidModelName(
            f"invalid {what} {name!r}: names ending in {', '.join(_RESERVED_SUFFIXES)} "
            "are reserved for the store's own files"
        )
    return name


def _is_name(name: str) -> bool:
    try:
        validate_name(name)
    except InvalidModelName:
        return False
    return True


def validate_version(version: str) -> str:
    """Return `version` if it is semver `MAJOR.MINOR.PATCH[-pre]`, else raise StoreError."""
    if not isinstance(version, str) or not _SEMVER_RE.fullmatch(version):
        raise StoreError(
            f"invalid version {version!r}: use semver MAJOR.MINOR.PATCH with an optional "
            "lowercase pre-release, e.g. '1.2.0' or '2.0.0-rc.1'"
        )
    return version


def parse_version(version: str) -> tuple[Any, ...]:
    """A sort key giving semver precedence (1.0.0-rc.1 < 1.0.0 < 1.0.1 < 1.1.0)."""
    match = _SEMVER_RE.fullmatch(validate_version(version))
    major, minor, patch, pre = match.groups()  # type: ignore[union-attr]
    if pre is None:
        return (int(major), int(minor), int(patch), (1,))
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), (0, ids))


# -- filesystem helpers -----------------------------------------------------------------------


def _make_writable(path: Path) -> None:
    """Undo the read-only modes of a published folder so it can be deleted."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, 0o755)
    for dirpath, dirnames, filenames in os.walk(path):
        for d in dirnames:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(dirpath, d), 0o755, follow_symlinks=False)
        for f in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(os.path.join(dirpath, f), 0o644)


def _make_read_only(path: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o444)
        os.chmod(dirpath, 0o555)


def _remove_tree(path: Path) -> None:
    _make_writable(path)
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        raise StoreError(f"could not remove {path}")


def _fsync_tree(path: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(path, topdown=False):
        for f in filenames:
            _fsync_path(Path(dirpath, f))
        _fsync_path(Path(dirpath))


def _try_flock(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


_held = threading.local()  # .paths: the lock files this thread holds (`lock` is re-entrant)


# -- the store --------------------------------------------------------------------------------


class ModelStore:
    """Immutable model versions under `<home>/store/<category>/<name>/<version>/`."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = Path(home).resolve() if home is not None else companion_home()
        self.root = store_root(self.home)

    # paths and listings

    def model_dir(self, category: str, name: str) -> Path:
        """`store/<category>/<name>/`, with both names validated."""
        return self.root / validate_name(category, "category") / validate_name(name)

    def version_dir(self, category: str, name: str, version: str) -> Path:
        """`store/<category>/<name>/<version>/` (it may not exist)."""
        return self.model_dir(category, name) / validate_version(version)

    def list_versions(self, category: str, name: str) -> list[str]:
        """Published versions, oldest first by semver; staging and trash folders are skipped."""
        folder = self.model_dir(category, name)
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if _SEMVER_RE.fullmatch(p.name) and p.is_dir()]
        return sorted(found, key=parse_version)

    def list_models(self, category: str | None = None) -> list[tuple[str, str]]:
        """(category, name) of every model with at least one published version, sorted."""
        if category is not None:
            categories = [validate_name(category, "category")]
        elif self.root.is_dir():
            categories = sorted(p.name for p in self.root.iterdir() if _is_name(p.name))
        else:
            categories = []
        models = []
        for cat in categories:
            folder = self.root / cat
            names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            models += [(cat, n) for n in names if _is_name(n) and self.list_versions(cat, n)]
        return models

    def latest_version(self, category: str, name: str) -> str | None:
        """The highest release (pre-releases only when there is no release), or None."""
        versions = self.list_versions(category, name)
        releases = [v for v in versions if "-" not in v]
        return (releases or versions or [None])[-1]

    def next_version(self, category: str, name: str, bump: Literal["major", "minor", "patch"] = "minor") -> str:
        """The version after the highest release: "1.0.0" first, then bumped by `bump`."""
        if bump not in ("major", "minor", "patch"):
            raise StoreError(f"invalid bump {bump!r}: use 'major', 'minor' or 'patch'")
        releases = [v for v in self.list_versions(category, name) if "-" not in v]
        if not releases:
            return "1.0.0"
        major, minor, patch = (int(x) for x in releases[-1].split("."))
        if bump == "major":
            return f"{major + 1}.0.0"
        if bump == "minor":
            return f"{major}.{minor + 1}.0"
        return f"{major}.{minor}.{patch + 1}"

    # reading

    def open(self, category: str, name: str, version: str | None = None, verify: bool = True) -> Path:
        """The folder of a version (latest if None), safety-checked and, if `verify`, verified."""
        available = self.list_versions(category, name)
        chosen = version if version is not None else self.latest_version(category, name)
        if chosen is None or validate_version(chosen) not in available:
            listed = ", ".join(available) if available else "none"
            wanted = f"version {chosen}" if chosen else "published version"
            raise ModelNotFoundError(f"{category}/{name} has no {wanted} in {self.root}; available: {listed}")
        folder = self.version_dir(category, name, chosen)
        check_safe_files(folder)
        if verify:
            verify_manifest(folder)
        return folder

    # writing

    @contextlib.contextmanager
    def lock(self, category: str, name: str, timeout: float = 300.0) -> Iterator[None]:
        """Hold the exclusive cross-process writer lock of one model (re-entrant per thread)."""
        folder = self.model_dir(category, name)
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / ".lock")
        held: set[str] = _held.__dict__.setdefault("paths", set())
        if path in held:  # this thread already holds it
            yield
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout
            while not _try_flock(fd, fcntl.LOCK_EX):
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"timed out after {timeout:g}s waiting for the lock on {category}/{name}"
                        f" ({path}): another process is writing this model"
                    )
                time.sleep(0.05)
            held.add(path)
            try:
                yield
            finally:
                held.discard(path)
        finally:
            os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def staging(self, category: str, name: str) -> Iterator[Path]:
        """A fresh folder inside the store for a writer to fill, then `publish_staged`.

        The folder is removed if the block raises; while the block runs it is flock-held so
        `gc` never removes it. Publish it inside the block.
        """
        folder = self.model_dir(category, name)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        fd = os.open(tmp, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield tmp
        except BaseException:
            _remove_tree(tmp)
            raise
        finally:
            os.close(fd)

    def publish(self, category: str, name: str, version: str, source: Path, *, move: bool = False) -> Path:
        """Publish the files of `source` as a new, read-only version; return its folder.

        Unsafe files are refused before anything is written. `move=True` moves `source` in (one
        rename on the same filesystem) instead of copying it.
        """
        source = Path(source).resolve()
        target = self.version_dir(category, name, version)
        files = [(rel, path) for rel, path, _ in _walk_files(source) if rel != MANIFEST_NAME]
        if not files:
            raise StoreError(f"nothing to publish: {source} holds no files")
        check_safe_files(source)
        if target.exists():
            raise self._exists(category, name, version)
        if move and source.is_relative_to(self.root):
            raise StoreError(f"refusing to move {source}: it is inside the store; copy it")
        with self.staging(category, name) as tmp:
            if move and self._move_in(source, tmp):
                try:
                    return self.publish_staged(tmp, category, name, version)
                except BaseException:
                    _make_writable(tmp)
                    os.rename(tmp, source)  # give the user's folder back
                    raise
            for rel, path in files:
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, tmp / rel)
            published = self.publish_staged(tmp, category, name, version)
        if move:
            _remove_tree(source)
        return published

    @staticmethod
    def _move_in(source: Path, tmp: Path) -> bool:
        """Rename `source` onto the empty staging folder; False across filesystems."""
        try:
            os.rename(source, tmp)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                return False
            raise
        _make_writable(tmp)
        (tmp / MANIFEST_NAME).unlink(missing_ok=True)
        return True

    def publish_staged(self, staging_path: Path, category: str, name: str, version: str) -> Path:
        """Publish a folder from `staging` as `version`: manifest, fsync, read-only, rename."""
        staging_path = Path(staging_path)
        target = self.version_dir(category, name, version)
        if staging_path.parent != target.parent or not staging_path.name.startswith(".tmp-"):
            raise StoreError(
                f"{staging_path} is not a staging folder of {category}/{name}; get one from ModelStore.staging()"
            )
        check_safe_files(staging_path)
        write_manifest(staging_path)
        _fsync_tree(staging_path)
        _make_read_only(staging_path)
        with self.lock(category, name):
            if target.exists():
                raise self._exists(category, name, version)
            try:
                os.rename(staging_path, target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise self._exists(category, name, version) from exc
                raise
            _fsync_path(target.parent)
        return target

    def _exists(self, category: str, name: str, version: str) -> StoreError:
        return StoreError(
            f"{category}/{name} {version} already exists in {self.root}; published versions "
            f"are immutable: publish a new one (next: {self.next_version(category, name)})"
        )

    # removing

    def delete_version(self, category: str, name: str, version: str) -> None:
        """Remove a version: renamed to `.trash-*` at once (atomic), then deleted."""
        target = self.version_dir(category, name, version)
        with self.lock(category, name):
            if not target.is_dir():
                raise ModelNotFoundError(f"{category}/{name} has no version {version} to delete")
            trash = target.with_name(f".trash-{version}-{os.urandom(4).hex()}")
            os.rename(target, trash)
            _fsync_path(target.parent)
        _remove_tree(trash)

    def gc(self, max_age: float = 3600.0) -> list[Path]:
        """Remove `.tmp-*` and `.trash-*` folders older than `max_age` seconds left by crashes.

        Staging folders still held by a live writer are kept. Returns the removed paths.
        """
        removed = []
        now = time.time()
        for folder in sorted(self.root.glob("*/*/.tmp-*")) + sorted(self.root.glob("*/*/.trash-*")):
            try:
                st = folder.lstat()
                if now - max(st.st_mtime, st.st_ctime) < max_age or not stat.S_ISDIR(st.st_mode):
                    continue
                fd = os.open(folder, os.O_RDONLY)
            except FileNotFoundError:
                continue  # removed meanwhile by another process
            try:
                if not _try_flock(fd, fcntl.LOCK_EX):
                    continue  # a live writer is filling it
                _remove_tree(folder)
                removed.append(folder)
            finally:
                os.close(fd)
        return removed
