"""Group commit: writers in one process that arrive while a write is in progress share the next one.

    commits = GroupCommit()
    seq = commits.submit(row, write_rows)   # write_rows(list of rows) -> one result per row

Whoever holds the leader lock writes every item queued so far, in arrival order, with one call
of `write`; the others find their item written when they get the lock and return at once. Each
`submit` returns only after its own item's write succeeded, and raises that write's error if it
failed (every item in a failed batch fails). Used by the audit log (`models.audit`): 32 requests
starting at once wrote 64 rows one transaction each (issue 21).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Slot(Generic[T]):
    item: T
    done: bool = False
    result: Any = None
    error: BaseException | None = None


class GroupCommit(Generic[T, R]):
    """The queue and leader lock of one write target (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leader = threading.Lock()
        self._queue: list[_Slot[T]] = []

    def submit(self, item: T, write: Callable[[list[T]], list[R]]) -> R:
        """Queue `item`; return its result once a `write` that included it has returned."""
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
        with self._leader:
            if not slot.done:
                with self._lock:
                    batch, self._queue = self._queue, []
                try:
                    results = write([s.item for s in batch])
                except BaseException as exc:
                    for s in batch:
                        s.error, s.done = exc, True
                else:
                    for s, result in zip(batch, results, strict=True):
                        s.result, s.done = result, True
        if slot.error is not None:
            raise slot.error
        return slot.result
