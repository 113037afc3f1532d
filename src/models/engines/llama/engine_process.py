"""The continuous-batching scheduler in a process of its own (`companion serve --engine-process`).

In one process the scheduler's Python (admission, bookkeeping, sampling) shares one interpreter
lock with everything else a server does per request: HTTP and SSE on the event loop, keys,
audit rows, the user's session, preferences and memory in the database. Measured on the serving
bench (docs/serving.md, "Session 16"), that sharing, not the model, held 32 concurrent streams to
2.2-2.5x the one-at-a-time throughput. vLLM's V1 engine split its engine core from its API server
for the same reason. Here the `FastEngine` stays in the server for everything else (scoring,
best-of-N candidates, tokenizing), and its batched decoding runs in a child process with its own
copy of the weights (memory-mapped from the same files) and its own `Scheduler`:

- the server sends each request's prompt ids, its `SamplingParams` as plain data (a logits guide
  as `engines.guides.guide_spec`), its user and suppressed ids over a pipe;
- the child decodes them in its batch and sends back each text piece, then the request's
  statistics or its error;
- a client that leaves cancels its request in the child at the next step.

`EngineProcess` has the interface of `Scheduler` that `FastEngine.stream_ids` uses (`submit`
gives an iterable ticket with `stats` and `cancel`; `close`). Only JSON crosses the socket pair
(`_send` / `_receive`), never pickles: neither side can be handed an object to build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.engines.base import GenerationStats, SamplingParams
from models.engines.guides import Tables, guide_from_spec, guide_spec
from models.errors import EngineError, GenerationInputError, QueueFullError

if TYPE_CHECKING:
    from models.engines.llama.engine import FastEngine

__all__ = ["EngineProcess", "params_from_data", "params_to_data"]

_ERRORS: dict[str, type[EngineError]] = {
    "GenerationInputError": GenerationInputError,
    "QueueFullError": QueueFullError,
    "EngineError": EngineError,
}
_STATS = ("completion_tokens", "total_s", "finish_reason")


def params_to_data(params: SamplingParams, tables: Tables | None = None) -> dict[str, Any]:
    """`params` as plain data (`params_from_data` gives them back, guide included; a guide's
    tables go by number through `tables`, the receiver's own `Tables` reads them)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if f.name == "guide":
            value = guide_spec(value, tables)
        elif f.name == "logit_bias" and value is not None:
            value = [(int(k), float(v)) for k, v in value.items()]
        elif f.name == "asked":
            value = sorted(value)
        out[f.name] = value
    return out


def params_from_data(data: dict[str, Any], tables: Tables | None = None) -> SamplingParams:
    data = dict(data)
    data["guide"] = guide_from_spec(data.get("guide"), tables)
    if data.get("logit_bias") is not None:
        data["logit_bias"] = dict(data["logit_bias"])
    data["stop"] = tuple(data.get("stop") or ())
    data["asked"] = frozenset(data.get("asked") or ())
    if data.get("tools") is not None:
        data["tools"] = tuple(data["tools"])
    return SamplingParams(**data)


def _send(conn: Connection, msg: tuple[Any, ...]) -> None:
    conn.send_bytes(json.dumps(msg, separators=(",", ":")).encode("utf-8"))


def _receive(conn: Connection) -> list[Any]:
    return json.loads(conn.recv_bytes())


def _recipe(engine: FastEngine) -> dict[str, Any]:
    """How to build the same engine in the child: folder, adapter, weights format, threads."""
    return {
        "folder": str(engine.folder),
        "adapter": (engine.adapter or {}).get("path"),
        "dtype": "bfloat16" if engine.dtype == torch.bfloat16 else "float32",
        "quantization": engine.quantization,
        "threads": engine.threads,
        "threads_batch": engine.threads_batch if engine.threads_batch != engine.threads else None,
    }


def _build(recipe: dict[str, Any]) -> FastEngine:
    from models.engines.llama.engine import FastEngine
    from models.engines.llama.runtime import quantize_int8

    dtype = torch.bfloat16 if recipe["dtype"] == "bfloat16" else torch.float32
    engine = FastEngine(recipe["folder"], dtype=dtype, threads=recipe["threads"], adapter=recipe["adapter"],
                        threads_batch=recipe["threads_batch"])  # fmt: skip
    if recipe["quantization"] and not engine.quantization:  # the server quantized its copy after loading
        quantize_int8(engine)
    return engine


@dataclasses.dataclass
class _Refused:
    kind: str
    message: str


class _Forward:
    """A ticket's outbox in the child: its pieces go to the one sender thread, tagged."""

    def __init__(self, rid: int, out: queue.SimpleQueue) -> None:
        self.rid, self.out = rid, out

    def put(self, item: Any) -> None:
        self.out.put((self.rid, item))


def _child(conn: Any, recipe: dict[str, Any], settings: dict[str, Any]) -> None:
    """The engine process: build the engine, batch what arrives, send back what it decodes."""
    from models.engines.llama.scheduler import DONE, Scheduler

    try:
        engine = _build(recipe)
        scheduler = Scheduler(engine, **settings)
    except BaseException as exc:  # the parent reports it
        _send(conn, ("fatal", f"{type(exc).__name__}: {exc}"))
        return
    _send(conn, ("ready", {"parameters": engine.parameters}))
    out: queue.SimpleQueue = queue.SimpleQueue()
    tables = Tables()  # the steering biases the server has sent, by number
    tickets: dict[int, Any] = {}
    lock = threading.Lock()

    def send() -> None:
        while True:
            rid, item = out.get()
            if rid < 0:
                return
            if isinstance(item, _Refused):  # the submit itself failed
                _send(conn, ("done", rid, {}, (item.kind, item.message)))
            elif item is DONE:
                with lock:  # the submit that made the ticket has stored it
                    ticket = tickets.pop(rid, None)
                stats = {k: getattr(ticket.stats, k) for k in _STATS} if ticket else {}
                if ticket is not None:
                    stats["extra"] = ticket.stats.extra
                err = ticket.error if ticket is not None else None
                error = None if err is None else (type(err).__name__, str(err))
                _send(conn, ("done", rid, stats, error))
            else:
                _send(conn, ("piece", rid, item))

    sender = threading.Thread(target=send, name="companion-engine-send", daemon=True)
    sender.start()
    try:
        while True:
            try:
                msg = _receive(conn)
            except (EOFError, OSError):  # the server is gone
                break
            if msg[0] == "submit":
                _, rid, ids, data, user, suppress, dropped = msg
                with lock:
                    try:
                        params = params_from_data(data, tables)
                        mask = torch.tensor(suppress, dtype=torch.long) if suppress is not None else None
                        tickets[rid] = scheduler.submit(
                            ids, params, user=user, suppress=mask, outbox=_Forward(rid, out)
                        )
                    except Exception as exc:  # sent by the sender thread: one writer on the pipe
                        out.put((rid, _Refused(type(exc).__name__, str(exc))))
                    tables.forget(dropped)
            elif msg[0] == "cancel":
                with lock:
                    ticket = tickets.get(msg[1])
                if ticket is not None:
                    ticket.cancel()
            elif msg[0] == "close":
                break
    finally:
        scheduler.close()
        out.put((-1, None))
        sender.join(timeout=5)


class RemoteTicket:
    """A request decoding in the engine process: iterate it for text pieces; `stats` is filled
    in when it ends, and its error raised there."""

    def __init__(self, owner: EngineProcess, rid: int, stats: GenerationStats) -> None:
        self.owner, self.rid, self.stats = owner, rid, stats
        self.submitted = time.perf_counter()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.done = False

    def cancel(self) -> None:
        if not self.done:
            self.owner.send(("cancel", self.rid))

    def __iter__(self) -> Iterator[str]:
        try:
            while True:
                kind, value = self.inbox.get()
                if kind == "done":
                    break
                if self.stats.time_to_first_token_s is None:
                    self.stats.time_to_first_token_s = time.perf_counter() - self.submitted
                yield value
        finally:
            if not self.done:
                self.cancel()
        if self.error is not None:
            raise self.error


class EngineProcess:
    """`Scheduler`'s `submit`/`close` with the scheduler in a child process (see the module
    docstring). `settings` are the `Scheduler`'s (max_rows, max_waiting, prefill_chunk,
    prefix_cache_mb, user_rows...); at most `max_rows + max_waiting` requests are in flight, and
    `submit` raises `QueueFullError` beyond. The child builds the engine as it is when this
    starts (folder, adapter, dtype, int8, threads): a later format change of the server's copy
    does not reach it (a new version is a new engine, with its own)."""

    def __init__(self, engine: FastEngine, **settings: Any) -> None:
        self.engine = engine
        self.max_pending = int(settings.get("max_rows", 64)) + int(settings.get("max_waiting", 256))
        # A fresh interpreter that imports only this module (multiprocessing's spawn would run
        # the server's own __main__ again), on one end of a socket pair.
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[3])  # where `models` is importable from
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        self.process = subprocess.Popen([sys.executable, "-m", "models.engines.llama.engine_process",
                                         str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env)  # fmt: skip
        theirs.close()
        self._conn = Connection(ours.detach())
        # The bound is kept here, at submit (a 429 before anything is sent): the child's own
        # queue may then hold every request this side lets through.
        _send(self._conn, ("start", _recipe(engine), {**settings, "max_waiting": self.max_pending}))
        try:
            kind, info = _receive(self._conn)
        except EOFError:
            kind, info = "fatal", f"it exited with code {self.process.wait(timeout=10)}"
        if kind != "ready":
            self._conn.close()
            self.process.wait(timeout=10)
            raise EngineError(f"the engine process did not start: {info}")
        self._ids = itertools.count()
        self._tickets: dict[int, RemoteTicket] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._tables = Tables()  # the guides' biases the child holds
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="companion-engine-read", daemon=True)
        self._reader.start()

    def submit(self, ids: list[int], params: SamplingParams, *, user: str | None = None,
               suppress: torch.Tensor | None = None) -> RemoteTicket:  # fmt: skip
        """Queue a generation in the engine process (for `user`, else `REQUESTER`'s)."""
        from models.engines.llama.scheduler import REQUESTER

        user = REQUESTER.get() if user is None else user
        stats, ids, max_new, _t0 = self.engine.begin(ids, params)
        with self._lock:
            if self._closed:
                raise EngineError("the engine process has stopped")
            if len(self._tickets) >= self.max_pending:
                raise QueueFullError(f"{self.max_pending} requests are already waiting for this model")
            rid = next(self._ids)
            ticket = self._tickets[rid] = RemoteTicket(self, rid, stats)
        if max_new <= 0:
            self._end(rid, {}, None)
            return ticket
        mask = suppress.tolist() if suppress is not None else None
        with self._send_lock:  # numbered tables must reach the child in the order they were numbered
            try:
                data = params_to_data(params, self._tables)
            except BaseException:
                self._tables.clear()
                with self._lock:
                    self._tickets.pop(rid, None)
                raise
            with contextlib.suppress(OSError, ValueError):
                _send(self._conn, ("submit", rid, list(ids), data, user, mask, self._tables.dropped()))
        return ticket

    @property
    def in_flight(self) -> int:
        """Requests submitted and not yet finished."""
        with self._lock:
            return len(self._tickets)

    def send(self, msg: tuple[Any, ...]) -> None:
        """A message to the engine process (dropped once it has stopped: `_read` ends its requests)."""
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            _send(self._conn, msg)

    def _read(self) -> None:
        while True:
            try:
                msg = _receive(self._conn)
            except (EOFError, OSError):
                break
            if msg[0] == "piece":
                ticket = self._tickets.get(msg[1])
                if ticket is not None:
                    ticket.inbox.put(("piece", msg[2]))
            elif msg[0] == "done":
                self._end(msg[1], msg[2], msg[3])
        with self._lock:
            self._closed = True
            left = list(self._tickets)
        code = self.process.poll()
        for rid in left:
            self._end(rid, {}, ("EngineError", f"the engine process stopped (exit code {code})"))

    def _end(self, rid: int, stats: dict[str, Any], error: tuple[str, str] | None) -> None:
        with self._lock:
            ticket = self._tickets.pop(rid, None)
        if ticket is None:
            return
        for key in _STATS:
            if key in stats:
                setattr(ticket.stats, key, stats[key])
        ticket.stats.extra.update(stats.get("extra") or {})
        if error is not None:
            ticket.error = _ERRORS.get(error[0], EngineError)(error[1])
        ticket.done = True
        ticket.inbox.put(("done", None))

    def close(self) -> None:
        self.send(("close",))
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            self.process.wait(timeout=5)
        with contextlib.suppress(OSError):
            self._conn.close()
        self._reader.join(timeout=5)


def main(argv: list[str]) -> None:
    """`python -m models.engines.llama.engine_process FD`: the engine process on the socket `FD`."""
    conn = Connection(int(argv[0]))
    kind, recipe, settings = _receive(conn)
    if kind == "start":
        _child(conn, recipe, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
