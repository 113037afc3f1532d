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
import hashlib
import json
import math
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from models.errors import (
    IntegrityError,
    InvalidModelName,
    ModelNotFoundError,
    StoreError,
    UnsafeFileError,
)
from models.home import companion_home, store_root

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
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "companion-manifest/1"
UNSAFE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"})
_RESERVED_SUFFIXES = (".tmp", ".lock", ".trash")
_NAME_RE = re.compile(NAME_PATTERN)
_SEMVER_RE = re.compile(SEMVER_PATTERN)
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # the safetensors library's own limit
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2}
_DTYPE_BYTES |= {"I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_CONVERT_HINT = "convert it to safetensors, e.g. with `safetensors.torch.save_file`"
# A cached hash is trusted only if the file's last change is this much older than the moment
# it was hashed: otherwise a later write could land in the same coarse timestamp tick and go
# unseen (git's "racy clean" problem). 2 s covers 1 s and FAT's 2 s timestamp granularity.
_RACY_NS = 2_000_000_000


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


# -- the stat-keyed cache ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    value: str
    stamp_ns: int  # time.time_ns() taken before the file was read


class _StatCache:
    """Results keyed by (path, dev, inode, size, mtime_ns, ctime_ns), thread-safe, bounded."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: dict[tuple[Any, ...], _Entry] = {}
        self._lock = threading.Lock()
        self._max = max_entries

    @staticmethod
    def key(path: Path, st: os.stat_result) -> tuple[Any, ...]:
        return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def get(self, path: Path, st: os.stat_result) -> str | None:
        with self._lock:
            entry = self._data.get(self.key(path, st))
        changed = max(st.st_mtime_ns, st.st_ctime_ns)
        if entry is None or entry.stamp_ns - changed < _RACY_NS:
            return None
        return entry.value

    def put(self, path: Path, st: os.stat_result, value: str, stamp_ns: int) -> None:
        with self._lock:
            if len(self._data) >= self._max:
                self._data.clear()
            self._data[self.key(path, st)] = _Entry(value, stamp_ns)


_HASHES = _StatCache()
_SAFE = _StatCache()


# -- safety checks ----------------------------------------------------------------------------


def _walk_files(folder: Path) -> list[tuple[str, Path, os.stat_result]]:
    """Every regular file under `folder` as (posix relpath, path, stat), sorted by relpath."""
    if not folder.is_dir():
        raise ModelNotFoundError(f"model folder {folder} does not exist or is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                rel = (base / d).relative_to(folder).as_posix()
                raise UnsafeFileError(f"{rel} in {folder} is a symlinked folder; copy it instead")
        for f in filenames:
            path = base / f
            rel = path.relative_to(folder).as_posix()
            try:
                st = path.stat()
            except OSError as exc:
                raise UnsafeFileError(f"{rel} in {folder} cannot be read: {exc}") from exc
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeFileError(f"{rel} in {folder} is not a regular file")
            found.append((rel, path, st))
    return sorted(found, key=lambda item: item[0])


def _unsafe(rel: str, what: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"refusing {rel}: {what}; only safetensors weights are loaded (pickle-based formats "
        f"can run code when loaded): {_CONVERT_HINT}"
    )


def _check_zip(rel: str, path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise _unsafe(rel, f"it looks like a zip archive but cannot be inspected ({exc})") from exc
    for member in names:
        if Path(member).suffix.lower() in UNSAFE_SUFFIXES:
            raise _unsafe(rel, f"it is a zip archive holding {member!r} (torch/numpy format)")


def _check_safetensors(rel: str, path: Path, size: int) -> None:
    """Check a safetensors header and offsets against the file size, loading no tensor."""

    def bad(why: str) -> IntegrityError:
        return IntegrityError(f"{rel}: corrupt or truncated safetensors file: {why}")

    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise bad(f"only {size} bytes, no header")
        n = int.from_bytes(head, "little")
        if n < 2 or n > min(_MAX_HEADER, size - 8):
            raise bad(f"header length {n} does not fit a {size}-byte file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise bad(f"header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    data_len = size - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise bad(f"tensor {key!r} has no data_offsets")
        begin, end = offsets
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise bad(f"tensor {key!r} has invalid data_offsets {offsets}")
        if end > data_len:
            raise bad(f"tensor {key!r} ends at byte {end} of a {data_len}-byte data section")
        width, shape = _DTYPE_BYTES.get(info.get("dtype")), info.get("shape")
        known = width and isinstance(shape, list) and all(isinstance(d, int) for d in shape)
        if known and width * math.prod(shape) != end - begin:
            raise bad(f"tensor {key!r} size does not match its dtype and shape")


def _check_file(rel: str, path: Path, st: os.stat_result) -> None:
    suffix = path.suffix.lower()
    if suffix in UNSAFE_SUFFIXES:
        raise _unsafe(rel, f"'{suffix}' files may hold pickles")
    if _SAFE.get(path, st) is not None:
        return
    stamp = time.time_ns()
    with path.open("rb") as f:
        head = f.read(8)
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        raise _unsafe(rel, f"it is a pickle stream (protocol {head[1]})")
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")):
        _check_zip(rel, path)
    if head.startswith(b"\x93NUMPY"):
        raise _unsafe(rel, "it is a numpy array file")
    if suffix == ".safetensors":
        _check_safetensors(rel, path, st.st_size)
    _SAFE.put(path, st, "ok", stamp)


def check_safe_files(folder: Path) -> None:
    """Refuse any file under `folder` that could run code when loaded, or a broken safetensors.

    Raises UnsafeFileError (pickle streams, torch zip archives, numpy files and the suffixes in
    `UNSAFE_SUFFIXES`) or IntegrityError (a safetensors file whose header or offsets do not fit
    the file), naming the file by its path relative to `folder`. Nothing is ever unpickled.
    """
    folder = Path(folder)
    for rel, path, st in _walk_files(folder):
        _check_file(rel, path, st)


# -- manifests --------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _file_hash(path: Path, st: os.stat_result, full: bool) -> str:
    cached = None if full else _HASHES.get(path, st)
    if cached is not None:
        return cached
    stamp = time.time_ns()
    value = _sha256_file(path)
    _HASHES.put(path, st, value, stamp)
    return value


def _entries(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        rel: {"sha256": _file_hash(path, st, full=True), "size": st.st_size}
        for rel, path, st in _walk_files(folder)
        if rel != MANIFEST_NAME
    }


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_manifest(folder: Path) -> dict[str, Any]:
    """Hash every file in `folder` (except manifest.json) into `folder/manifest.json`."""
    folder = Path(folder)
    manifest = {
        "format": MANIFEST_FORMAT,
        "files": _entries(folder),
        "created": datetime.now(UTC).isoformat(),
    }
    _write_json_atomic(folder / MANIFEST_NAME, manifest)
    return manifest


def _read_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise IntegrityError(f"{folder} has no {MANIFEST_NAME}; it was not published") from exc
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"{path} cannot be read: {exc}") from exc
    files = data.get("files") if isinstance(data, dict) else None
    ok = isinstance(files, dict) and data.get("format") == MANIFEST_FORMAT
    if not ok or not all(
        isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(e.get("size"), int)
        for e in files.values()
    ):
        raise IntegrityError(f"{path} is malformed (expected format {MANIFEST_FORMAT!r})")
    return files


def verify_manifest(folder: Path, *, full: bool = False) -> None:
    """Raise IntegrityError naming the first file that differs from `folder/manifest.json`.

    Checks, in order: files missing from disk, files on disk that the manifest does not list,
    sizes, then sha256. Hashes are cached by stat, so re-verifying an unchanged folder costs one
    `stat` per file; `full=True` re-hashes everything.
    """
    folder = Path(folder).resolve()
    expected = _read_manifest(folder)
    on_disk = {rel: (path, st) for rel, path, st in _walk_files(folder) if rel != MANIFEST_NAME}
    for rel in sorted(expected.keys() - on_disk.keys()):
        raise IntegrityError(f"{rel} is listed in the manifest of {folder} but missing on disk")
    for rel in sorted(on_disk.keys() - expected.keys()):
        raise IntegrityError(f"{rel} in {folder} is not in its manifest (added after publish)")
    for rel in sorted(expected):
        size = on_disk[rel][1].st_size
        if size != expected[rel]["size"]:
            raise IntegrityError(f"{rel} in {folder} has {size} bytes, manifest says {expected[rel]['size']}")
    for rel in sorted(expected):
        path, st = on_disk[rel]
        if _file_hash(path, st, full) != expected[rel]["sha256"]:
            raise IntegrityError(f"{rel} in {folder}: sha256 differs from its manifest")


def hash_folder(folder: Path) -> str:
    """A stable sha256 over a folder's manifest file entries (its manifest, or computed)."""
    folder = Path(folder)
    files = _read_manifest(folder) if (folder / MANIFEST_NAME).exists() else _entries(folder)
    canonical = {rel: {"sha256": e["sha256"], "size": e["size"]} for rel, e in files.items()}
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


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
