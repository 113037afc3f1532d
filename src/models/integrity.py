"""File integrity: what a model folder may contain, and proof that it has not changed.

* `check_safe_files` refuses anything that could run code when loaded (pickles, torch zip
  archives, numpy files), by content as well as by name, without ever unpickling;
  `.safetensors` headers are checked structurally (lengths, offsets, dtypes).
* `write_manifest` / `verify_manifest`: `manifest.json` holds the sha256 and size of every file;
  hashes are cached in-process by `stat` so a warm re-check costs one `stat` per file.

Split out of `models.store`, which re-exports the public names.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import threading
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from models.errors import (
    IntegrityError,
    ModelNotFoundError,
    UnsafeFileError,
)

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "UNSAFE_SUFFIXES",
    "check_safe_files",
    "hash_folder",
    "verify_manifest",
    "weights_sha256",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "companion-manifest/1"
UNSAFE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz"})
_CHUNK = 1 << 20
_MAX_HEADER = 100 << 20  # the safetensors library's own limit
_DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2}
_DTYPE_BYTES |= {"I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_CONVERT_HINT = "convert it to safetensors, e.g. with `safetensors.torch.save_file`"
# A cached hash is trusted only if the file's last change is this much older than the moment
# it was hashed: otherwise a later write could land in the same coarse timestamp tick and go
# unseen (git's "racy clean" problem). 2 s covers 1 s and FAT's 2 s timestamp granularity.
_RACY_NS = 2_000_000_000


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


_PICKLE_SCAN = 1 << 20  # opcodes read from the start of a file while looking for a pickle's STOP


def _pickle_protocol(path: Path) -> int | None:
    """The protocol of the pickle stream a file starts with, or None if it does not start with one.

    Protocols 2-5 announce themselves (`\\x80 N`); protocols 0 and 1 have no header, so the file
    is read as pickle opcodes (`pickletools.genops`: parsed, never executed) until a STOP, which
    is what `pickle.load` needs to run it. Any other file stops parsing at its first few bytes."""
    import pickletools

    with path.open("rb") as f:
        head = f.read(2)
        if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            return head[1]
        f.seek(0)
        try:
            highest = 0
            for op, _arg, pos in pickletools.genops(f):
                highest = max(highest, op.proto)
                if op.name == "STOP":
                    return highest
                if pos is not None and pos > _PICKLE_SCAN:
                    return None
        except Exception:
            return None
    return None


def _check_file(rel: str, path: Path, st: os.stat_result) -> None:
    suffix = path.suffix.lower()
    if suffix in UNSAFE_SUFFIXES:
        raise _unsafe(rel, f"'{suffix}' files may hold pickles")
    if _SAFE.get(path, st) is not None:
        return
    stamp = time.time_ns()
    with path.open("rb") as f:
        head = f.read(8)
    protocol = _pickle_protocol(path)
    if protocol is not None:
        raise _unsafe(rel, f"it is a pickle stream (protocol {protocol})")
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


def weights_sha256(folder: Path) -> str | None:
    """sha256 of a model folder's weights: `model.safetensors`, or its sharded index (whose
    hash pins the shard names; each shard is pinned by the folder's manifest). None if neither."""
    for name in ("model.safetensors", "model.safetensors.index.json"):
        path = Path(folder) / name
        if path.exists():
            return _file_hash(path, path.stat(), full=False)
    return None


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
