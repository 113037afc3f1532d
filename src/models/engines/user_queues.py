"""Waiting work per user, served round-robin between users and in arrival order within one.

One user's twenty requests cannot starve another's one: the server's fair lock (one generation
at a time per engine, `companion.server.generation.FairLock`) and the continuous-batching
scheduler's admission (`models.engines.llama.scheduler`) both take the next item from here.
Not thread-safe on its own: each owner holds its own lock around every call.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["UserQueues"]

T = TypeVar("T")


class UserQueues(Generic[T]):
    """Items queued per user; `pop` serves the users in turn (see the module docstring)."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[T]] = {}
        self._order: deque[str] = deque()  # users with items, next to be served first
        self._count = 0

    def __len__(self) -> int:
        """Items waiting, all users together."""
        return self._count

    def users(self) -> set[str]:
        return set(self._queues)

    def put(self, user: str, item: T) -> None:
        if user not in self._queues:
            self._queues[user] = deque()
            self._order.append(user)
        self._queues[user].append(item)
        self._count += 1

    def pop(self, skip: Callable[[str], bool] | None = None) -> T | None:
        """The first item of the next user in turn (passing over users for whom `skip(user)`
        is true, who keep their place); None when no user may be served."""
        for _ in range(len(self._order)):
            user = self._order.popleft()
            if skip is not None and skip(user):
                self._order.append(user)
                continue
            queue = self._queues[user]
            item = queue.popleft()
            self._count -= 1
            if queue:
                self._order.append(user)  # this user's next item waits for the others' turn
            else:
                del self._queues[user]
            return item
        return None

    def remove(self, user: str, item: T) -> bool:
        """Take `item` out of `user`'s queue (a waiter that gave up); whether it was there."""
        queue = self._queues.get(user)
        if queue is None or item not in queue:
            return False
        queue.remove(item)
        self._count -= 1
        if not queue:
            del self._queues[user]
            self._order.remove(user)
        return True

    def clear(self) -> list[T]:
        """Every waiting item (in no particular order), leaving none."""
        items = [item for queue in self._queues.values() for item in queue]
        self._queues, self._order, self._count = {}, deque(), 0
        return items
