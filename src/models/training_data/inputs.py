"""Accepting data in the shapes people have it: Datasets, results, lists, saved folders."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from models.errors import DataError

__all__ = ["as_dataset", "batch_rows", "iter_rows"]


def as_dataset(data: Any, kind: str) -> Dataset:
    """A `Dataset` from a Dataset, a validation result, rows, texts or a saved dataset folder."""
    if isinstance(data, Dataset):
        return data
    inner = getattr(data, "data", None)
    if isinstance(inner, Dataset):  # a ValidationResult
        return inner
    if isinstance(data, str | Path):
        from models.training_data.dataset_io import load_dataset

        if not Path(data).is_dir():
            raise DataError(f"{data} is not a saved dataset folder")
        return load_dataset(data)
    if isinstance(data, dict):
        return Dataset.from_dict(data)
    if isinstance(data, list | tuple):
        if not data:
            raise DataError(f"no {kind} data: the list is empty")
        if all(isinstance(x, str) for x in data):
            return Dataset.from_dict({"text": list(data)})
        if all(isinstance(x, dict) for x in data):
            return Dataset.from_list(list(data))
    raise DataError(
        f"cannot use {type(data).__name__} as {kind} data: pass a datasets.Dataset, a list of records or texts, "
        "or the folder of a saved dataset"
    )


def batch_rows(ds: Dataset, budget_bytes: int = 8 << 20, most: int = 1024) -> int:
    """Rows per read so that one batch holds about `budget_bytes` (1 MB book parts: 8 rows)."""
    if not len(ds):
        return 1
    per_row = max(1, ds.data.nbytes // max(1, ds.data.num_rows))
    return max(1, min(most, budget_bytes // per_row))


def iter_rows(ds: Dataset, batch_size: int | None = None) -> Iterator[dict[str, Any]]:
    """Rows of `ds` as plain dicts, read a batch at a time (bounded memory)."""
    plain = ds.with_format(None)
    names = plain.column_names
    for batch in plain.iter(batch_size=batch_size or batch_rows(plain)):
        for i in range(len(batch[names[0]]) if names else 0):
            yield {k: batch[k][i] for k in names}
