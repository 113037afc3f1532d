"""Datasets on disk: streaming writers, saving with a manifest and content hash, loading.

Intermediate datasets are Arrow files written a batch at a time (`RecordSink`) into a
temporary cache folder that `datasets` deletes when the process exits, and read back
memory-mapped: a 1 GB corpus never has to fit in memory. To keep one, `save_dataset` writes

    <folder>/
        data-00000-of-00001.arrow ...   the rows (`Dataset.save_to_disk`; Arrow IPC, no pickles)
        dataset_info.json, state.json   written by `datasets`
        dataset.json                    ours: format, kind, rows, columns, content_sha256, lineage
        manifest.json                   sha256 + size of every file (`models.store.write_manifest`)

`content_sha256` depends only on the rows (columns in sorted order, values in a fixed binary
encoding), not on how Arrow laid them out, so the same data always has the same hash; training
records it as lineage. `load_dataset` verifies the manifest before reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features

from models.errors import DataError

__all__ = [
    "DATASET_FORMAT",
    "RecordSink",
    "content_hash",
    "dataset_from_records",
    "load_dataset",
    "read_dataset_info",
    "save_dataset",
]

DATASET_FORMAT = "companion-dataset/1"
_BATCH_ROWS = 1000
_BATCH_BYTES = 8 << 20


def _cache_dir() -> Path:
    from datasets.fingerprint import get_temporary_cache_files_directory

    return Path(get_temporary_cache_files_directory())


class RecordSink:
    """Collects rows into an Arrow file a batch at a time; `finish()` returns the Dataset."""

    def __init__(self, features: Features, name: str = "records") -> None:
        from datasets.arrow_writer import ArrowWriter

        self.features = features
        self.path = _cache_dir() / f"{name}-{uuid.uuid4().hex[:12]}.arrow"
        self._writer = ArrowWriter(features=features, path=str(self.path))
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0
        self.count = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._bytes += sum(len(v) for v in row.values() if isinstance(v, str))
        self.count += 1
        if len(self._rows) >= _BATCH_ROWS or self._bytes >= _BATCH_BYTES:
            self._flush()

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def _flush(self) -> None:
        if self._rows:
            columns = {k: [r[k] for r in self._rows] for k in self.features}
            self._writer.write_batch(columns)
            self._rows, self._bytes = [], 0

    def finish(self) -> Dataset:
        self._flush()
        self._writer.finalize()
        self._writer.close()
        return Dataset.from_file(str(self.path))


def dataset_from_records(rows: Iterable[dict[str, Any]], features: Features, name: str = "records") -> Dataset:
    """A Dataset from an iterable of rows, written through a `RecordSink` (bounded memory)."""
    sink = RecordSink(features, name)
    sink.extend(rows)
    return sink.finish()


def _hash_column(digests: dict[str, Any], path: str, column: Any) -> None:
    """Feed one batch of a column into one digest per leaf (so batch boundaries do not matter)."""
    import pyarrow as pa

    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    digest = digests.setdefault(path, hashlib.sha256())
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        offsets = col.offsets.to_numpy(zero_copy_only=False)
        digest.update(np.diff(offsets).astype("<i8").tobytes())
        _hash_column(digests, path + "[]", col.flatten())
    elif pa.types.is_struct(col.type):
        for i in range(col.type.num_fields):
            _hash_column(digests, f"{path}.{col.type.field(i).name}", col.field(i))
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        for value in col.to_pylist():
            data = b"" if value is None else value.encode("utf-8", "surrogatepass")
            digest.update(struct.pack("<q", -1 if value is None else len(data)))
            digest.update(data)
    else:
        digest.update(col.to_numpy(zero_copy_only=False).astype(col.type.to_pandas_dtype()).tobytes())


def content_hash(ds: Dataset, batch_size: int = 10_000) -> str:
    """sha256 over the rows of `ds`, independent of Arrow's layout and of `batch_size`.

    Every leaf of every column (list lengths, list values, struct fields) is hashed as its own
    stream in a fixed binary encoding; the result hashes the row count and the sorted
    (leaf, digest) pairs.
    """
    digests: dict[str, Any] = {}
    names = sorted(ds.column_names)
    table_view = ds.with_format("arrow")
    for start in range(0, len(ds), batch_size):
        table = table_view[start : start + batch_size]
        for name in names:
            _hash_column(digests, name, table.column(name))
    final = hashlib.sha256(json.dumps(names).encode() + struct.pack("<q", len(ds)))
    for path in sorted(digests):
        final.update(path.encode() + b"\0" + digests[path].digest())
    return final.hexdigest()


def save_dataset(
    ds: Dataset,
    folder: str | Path,
    *,
    kind: str,
    lineage: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write `ds` to `folder` with `dataset.json` and `manifest.json`; return `dataset.json`'s data.

    The folder appears complete or not at all (written next to it, then renamed).
    """
    from models.store import hash_folder, write_manifest

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise DataError(f"{folder} already exists; choose another folder or pass overwrite=True")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with _quiet_progress():
            ds.save_to_disk(str(staging))
        info = {
            "format": DATASET_FORMAT,
            "kind": kind,
            "rows": len(ds),
            "columns": sorted(ds.column_names),
            "content_sha256": content_hash(ds),
            "created": datetime.now(UTC).isoformat(),
            "package_version": _package_version(),
            "lineage": lineage or {},
        }
        (staging / "dataset.json").write_text(json.dumps(info, indent=2, ensure_ascii=False, default=str) + "\n")
        write_manifest(staging)
        info["files_sha256"] = hash_folder(staging)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return info


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No `datasets` progress bars while we save (the caller shows its own progress)."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("companion-models")
    except Exception:  # not installed (running from a source tree)
        return "unknown"


def read_dataset_info(folder: str | Path) -> dict[str, Any]:
    """The `dataset.json` of a saved dataset (DataError when the folder is not one)."""
    path = Path(folder) / "dataset.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder} is not a saved dataset (no dataset.json); save one with save_dataset") from None
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        raise DataError(f"{path}: unknown format {info.get('format') if isinstance(info, dict) else info!r}")
    return info


def load_dataset(folder: str | Path, *, verify: bool = True) -> Dataset:
    """Load a dataset saved by `save_dataset`, checking every file against its manifest first."""
    from datasets import load_from_disk

    from models.store import verify_manifest

    read_dataset_info(folder)
    if verify:
        verify_manifest(Path(folder))
    return load_from_disk(str(folder))
