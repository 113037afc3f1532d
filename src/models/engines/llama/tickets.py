"""A request in the continuous-batching scheduler (`scheduler.py`): its `Ticket` (iterate it
for text pieces), who it is for (`requested_by`: fair admission is round-robin over users), and
the scheduler's own state of it while it is prefilled and decoded."""

from __future__ import annotations

import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from models.engines.base import DecodeRow, GenerationStats, SamplingParams
from models.engines.llama.cache import KVCache
from models.engines.llama.shared_prefix import Share

__all__ = ["DONE", "REQUESTER", "Ticket", "requested_by"]

#: Who the current generation is for (fair admission is round-robin over these); a server sets it.
REQUESTER: contextvars.ContextVar[str] = contextvars.ContextVar("companion_requester", default="")


@contextlib.contextmanager
def requested_by(user: str) -> Iterator[None]:
    """Generations started inside count as `user`'s for the scheduler's fairness."""
    token = REQUESTER.set(user)
    try:
        yield
    finally:
        REQUESTER.reset(token)


DONE = object()
"""What a ticket's outbox receives last."""


@dataclass
class Ticket:
    """One submitted request: iterate it for text pieces; `stats` and `result` when it ends."""

    ids: list[int]
    params: SamplingParams
    user: str
    row: DecodeRow
    stats: GenerationStats
    suppress: torch.Tensor | None = None
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    # the scheduler's own state of this request
    prefilled: int = 0
    cache: KVCache | None = None
    pos: int = 0
    last: int = 0
    shared: Share | None = None  # what this row holds of the shared segment

    def cancel(self) -> None:
        """The client left: the row is dropped at the next step."""
        self.cancelled.set()

    def __iter__(self) -> Iterator[str]:
        try:
            while True:
                item = self.outbox.get()
                if item is DONE:
                    break
                yield item
        finally:
            if not self.row.done:
                self.cancel()
        if self.error is not None:
            raise self.error
