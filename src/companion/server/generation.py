"""Generation off the event loop: one worker thread per request, a fair queue per engine, or
continuous batching on a local `fast` engine (`models.engines.llama.scheduler`).

Engines are not re-entrant (one generation at a time per instance, `models.engines.base`), and a
model's `last_stats` / a personality's `last_response` describe *its* last call. So every
request takes its engine's `FairLock` (round-robin between users, first come first served
within one user) for the whole turn, in one worker thread, and hands text pieces to the event
loop through an `asyncio.Queue`. A client
that goes away sets the request's cancel flag: the worker stops after the current token (or
leaves the queue if it was still waiting) and the engine is free for the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from models.engines.base import QUEUED
from models.engines.llama.scheduler import requested_by
from models.engines.user_queues import UserQueues
from models.security import acting_as

__all__ = ["FairLock", "Job", "Runner", "Turn"]

#: Model categories the OpenAI-compatible endpoints serve.
SERVED = ("personality", "base")
#: How often a queued request checks whether its client left (the hand-over itself is immediate).
CANCEL_POLL_S = 0.5


class FairLock:
    """A lock shared fairly between users: each user's waiters queue in arrival order, and the
    lock passes round-robin between users (one user's twenty requests cannot starve another's
    one: issue 15). A waiter can give up (`cancel`)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: UserQueues[threading.Event] = UserQueues()

    def acquire(self, cancel: threading.Event | None = None, user: str = "") -> bool:
        with self._mutex:
            if not self._held and not self._waiters:
                self._held = True
                return True
            turn = threading.Event()
            self._waiters.put(user, turn)
        while not turn.wait(CANCEL_POLL_S):
            if cancel is not None and cancel.is_set():
                with self._mutex:
                    if self._waiters.remove(user, turn):
                        return False
                break  # handed over meanwhile: we hold it, give it on
        if cancel is not None and cancel.is_set():
            self.release()
            return False
        return True

    def release(self) -> None:
        with self._mutex:
            nxt = self._waiters.pop()
            if nxt is None:
                self._held = False
                return
            nxt.set()  # ownership passes straight to the next waiter

    @property
    def waiting(self) -> int:
        with self._mutex:
            return len(self._waiters)


@dataclass
class Turn:
    """What a job returns: the pieces to stream, and what to do with the whole text afterwards."""

    pieces: Iterator[str]
    finish: Callable[[str], dict[str, Any]]
    prompt: dict[str, Any] | None = None
    """Which prompt answers and what fitting it to the context removed (known before decoding)."""


#: A job gets the loaded model, its category and name, and returns the turn to run.
Job = Callable[[Any, str, str], Turn]


class Batched:
    """The "lock" of an engine that batches (`FastEngine.enable_batching`): turns run at once and
    its scheduler shares every decoding step between them, admitting users round-robin."""

    def acquire(self, cancel: threading.Event | None = None, user: str = "") -> bool:
        return not (cancel is not None and cancel.is_set())

    def release(self) -> None:
        return None

    waiting = 0


BATCHED = Batched()


@dataclass
class Runner:
    """Runs jobs in worker threads as `user`: one at a time per engine in arrival order, or all
    at once on an engine that batches (`batch_rows` > 0 turns it on for local `fast` engines)."""

    workers: int = 64
    manager: Any = None
    batch_rows: int = 0
    engine_process: bool = False
    _batching: list[Any] = field(default_factory=list)
    _locks: dict[int, FairLock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _executor: ThreadPoolExecutor | None = None

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="companion-gen")
        return self._executor

    def get_manager(self) -> Any:
        if self.manager is not None:
            return self.manager
        from models.personality.loader import shared_manager

        return shared_manager()

    def resolve(self, model_id: str) -> tuple[str, str]:
        """`(category, name)` of a model id (`luna`, `personality/luna`, `companion-base`)."""
        from models.errors import DataError

        manager = self.get_manager()
        if "/" in model_id:
            category, name = model_id.split("/", 1)
            category, name = category, manager.canonical(category, name)[0]
        else:
            category, name = manager.find(model_id)
        if category not in SERVED:
            raise DataError(f"{model_id!r} is a {category} model; chat with a personality or a base model")
        return category, name

    def lock_for(self, model: Any) -> FairLock | Batched:
        """The lock of the engine a model generates with (personalities share their base's); an
        engine that can batch gets its scheduler started instead."""
        from models.gate import inside_checked_call

        with inside_checked_call():  # bookkeeping, not a generation: the engine's identity only
            base = getattr(model, "base", model)
            engine = getattr(base, "engine", base)
            key = id(engine)
        if self.batch_rows > 0 and hasattr(engine, "enable_batching"):
            with self._guard:
                if engine.scheduler is None:
                    engine.enable_batching(max_rows=self.batch_rows, process=self.engine_process)
                    if self.engine_process:  # ended with this server (`close`)
                        self._batching.append(engine)
            return BATCHED
        with self._guard:
            if key not in self._locks:
                self._locks[key] = FairLock()
            return self._locks[key]

    def _work(self, user: str, model_id: str, job: Job, put: Callable[[tuple[str, Any]], None], cancel: Any) -> None:
        try:
            with acting_as(user), requested_by(user):
                category, name = self.resolve(model_id)
                model = self.get_manager().load_model(category, name)
                if hasattr(model, "shared_sessions"):  # replicas share each user's session (issue 21)
                    model.shared_sessions = True
                lock = self.lock_for(model)
                # The job's own reads (the user's preferences and memory, the prompt) happen before
                # the engine's lock: they need the database, not the engine, and another user's
                # writes must not stall everyone's decoding (issue 15). Its pieces are lazy: the
                # generation itself runs only as they are read, under the lock.
                turn = job(model, category, name)
                if not lock.acquire(cancel, user):
                    close = getattr(turn.pieces, "close", None)
                    if close is not None:
                        close()
                    return
                # Who waits behind this turn: a small model's stream then decodes one sample
                # instead of taking the engine for its best of N (`LocalEngine.hold_if_free`).
                queued = QUEUED.set(None if lock is BATCHED else lambda: lock.waiting)
                try:
                    put(("start", (category, name, turn.prompt)))
                    pieces: list[str] = []
                    try:
                        for piece in turn.pieces:
                            if cancel.is_set():
                                break
                            if piece:
                                pieces.append(piece)
                                put(("piece", piece))
                    finally:
                        close = getattr(turn.pieces, "close", None)
                        if close is not None:
                            close()
                    if cancel.is_set():
                        return
                    put(("done", turn.finish("".join(pieces))))
                finally:
                    QUEUED.reset(queued)
                    lock.release()
        except Exception as exc:  # handed to the request, which answers it
            put(("error", exc))

    async def run(self, user: str, model_id: str, job: Job) -> AsyncIterator[tuple[str, Any]]:
        """Events of one job: ("start", (category, name, prompt)), ("piece", text)..., ("done", meta).
        Errors are raised; leaving the iteration early cancels the job."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening
                loop.call_soon_threadsafe(queue.put_nowait, item)

        loop.run_in_executor(self.executor, self._work, user, model_id, job, put, cancel)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            cancel.set()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        with self._guard:  # the engine processes this server started end with it
            engines, self._batching = self._batching, []
        for engine in engines:
            engine.close()
