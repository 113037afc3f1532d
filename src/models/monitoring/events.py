"""Generation events: what every generation through a `ModelManager` model records.

    recorder = get_recorder()
    recorder.record(GenerationEvent(category="personality", name="luna", ...))   # O(1), no I/O
    recorder.flush()                                                            # written now

`record` only appends to an in-memory queue; a daemon thread writes the queue to the
`generation_events` table in batches (every `flush_interval` seconds or `batch_size` events,
whichever comes first), one transaction per batch, and feeds the Prometheus metrics
(`models.monitoring.prometheus`). Readers (`ModelPerformanceMonitor`) call `flush()` first so
they see their own process's events. The queue is bounded: when the writer cannot keep up, the
oldest unwritten events are dropped and counted (`dropped`), generation is never blocked.

Events are tied to the database of the home they were recorded in (`COMPANION_HOME` or
`COMPANION_DATABASE_URL` at record time), so switching homes mid-process never mixes them.

User ids are never stored: `pseudonymize(user_id)` is an HMAC-SHA256 keyed with a random
per-home secret (`COMPANION_HOME/keys/monitoring.key`, created on first use, mode 0600),
truncated to 16 hex digits: stable per user within one home, not reversible without the key.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from models.context import current

__all__ = [
    "Clock",
    "EventRecorder",
    "GenerationEvent",
    "current_user",
    "generation_user",
    "get_recorder",
    "pseudonymize",
    "set_recorder",
]

log = logging.getLogger(__name__)


class Clock:
    """Where the monitor reads time: `now()` stamps events, `perf()` measures durations.
    Tests substitute a scripted clock to make latencies and windows exact."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def perf(self) -> float:
        return time.perf_counter()


@dataclass(frozen=True)
class GenerationEvent:
    """One generation (one request as the caller saw it). Times in seconds."""

    category: str
    name: str
    version: str | None
    engine: str
    latency_s: float
    ttft_s: float | None
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "length"
    user_hash: str | None = None
    error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, object]:
        out = asdict(self)
        out["at"] = self.at.astimezone(UTC).isoformat(timespec="microseconds")
        out["error"] = self.error[:200] if self.error else None
        return out


# --------------------------------------------------------------------------- user ids

_USER: contextvars.ContextVar[str | None] = contextvars.ContextVar("companion_generation_user", default=None)
_KEYS: dict[Path, bytes] = {}
_KEYS_LOCK = threading.Lock()


@contextlib.contextmanager
def generation_user(user_id: str | None) -> Iterator[None]:
    """Attribute the generations inside the block to `user_id` (the server sets this per request)."""
    token = _USER.set(user_id)
    try:
        yield
    finally:
        _USER.reset(token)


def current_user() -> str | None:
    return _USER.get()


def _home_key() -> bytes:
    from models.home import companion_home, home_secret

    path = companion_home() / "keys" / "monitoring.key"
    with _KEYS_LOCK:
        key = _KEYS.get(path)
        if key is not None:
            return key
        key = home_secret(path.name, lambda: secrets.token_bytes(32))
        if len(key) < 16:
            raise OSError(f"{path}: the monitoring key is truncated; delete it to make a new one")
        _KEYS[path] = key
        return key


def pseudonymize(user_id: str | None) -> str | None:
    """A stable, keyed, non-reversible id for `user_id` (None stays None)."""
    if user_id is None or user_id == "":
        return None
    return hmac.new(_home_key(), str(user_id).encode("utf-8"), hashlib.sha256).hexdigest()[:16]


# --------------------------------------------------------------------------- the recorder


def _target_url() -> str:
    from models import db

    return db.default_url()


class EventRecorder:
    """Queues events and writes them in batches from a background thread."""

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        batch_size: int = 256,
        flush_interval: float = 0.5,
        max_queue: int = 100_000,
        metrics: bool = True,
    ) -> None:
        if batch_size < 1 or max_queue < 1 or flush_interval <= 0:
            raise ValueError("batch_size and max_queue must be >= 1 and flush_interval > 0")
        self.clock = clock or Clock()
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.metrics = metrics
        self._queue: deque[tuple[str, GenerationEvent]] = deque(maxlen=max_queue)
        self._max_queue = max_queue
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._url_cache: tuple[tuple[str | None, str | None], str] | None = None
        self.written = 0
        self.dropped = 0
        self.failed = 0

    # --- hot path ------------------------------------------------------------------------

    def url(self) -> str:
        """The database URL events recorded now belong to (cached per home/URL setting)."""
        key = current().key
        cached = self._url_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        url = _target_url()
        self._url_cache = (key, url)
        return url

    def record(self, event: GenerationEvent) -> None:
        """Queue `event` (never blocks on I/O)."""
        if len(self._queue) >= self._max_queue:
            self.dropped += 1  # the deque drops the oldest on append
        self._queue.append((self.url(), event))
        if self._thread is None:
            self._start()
        if len(self._queue) >= self.batch_size:
            self._wake.set()

    def now(self) -> datetime:
        return self.clock.now()

    # --- writer --------------------------------------------------------------------------

    def _start(self) -> None:
        with self._write_lock:
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(target=self._run, name="companion-monitor-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the writer must never die; failures are logged and counted
                log.exception("monitoring: writing generation events failed")

    def flush(self) -> int:
        """Write every queued event now; returns how many were written."""
        written = 0
        with self._write_lock:
            while self._queue:
                batch: dict[str, list[GenerationEvent]] = {}
                for _ in range(min(len(self._queue), 5000)):
                    url, event = self._queue.popleft()
                    batch.setdefault(url, []).append(event)
                for url, events in batch.items():
                    written += self._write(url, events)
        return written

    def _write(self, url: str, events: list[GenerationEvent]) -> int:
        from sqlalchemy import insert

        from models import db

        if self.metrics:
            from models.monitoring.prometheus import observe

            observe(events)
        try:
            engine = db.connect(url)
            with engine.begin() as conn:
                conn.execute(insert(db.generation_events), [e.row() for e in events])
        except Exception as exc:
            self.failed += len(events)
            log.warning("monitoring: %d generation events lost (%s: %s)", len(events), type(exc).__name__, exc)
            return 0
        self.written += len(events)
        return len(events)

    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()


_RECORDER: list[EventRecorder] = []
_RECORDER_LOCK = threading.Lock()


def _flush_recorder() -> None:
    if _RECORDER:
        _RECORDER[0].flush()


def _register_flush() -> None:
    from models import db

    db.before_dispose(_flush_recorder)  # queued events are written before the pools close


_register_flush()


def get_recorder() -> EventRecorder:
    """The process-wide recorder (created on first use; flushed at interpreter exit)."""
    if _RECORDER:
        return _RECORDER[0]
    with _RECORDER_LOCK:
        if not _RECORDER:
            _RECORDER.append(EventRecorder())
    return _RECORDER[0]


def set_recorder(recorder: EventRecorder) -> EventRecorder:
    """Replace the process-wide recorder (the old one is flushed and stopped); returns the old one."""
    with _RECORDER_LOCK:
        old = _RECORDER[0] if _RECORDER else None
        if _RECORDER:
            _RECORDER[0] = recorder
        else:
            _RECORDER.append(recorder)
    if old is not None and old is not recorder:
        old.close()
    return old or recorder


@atexit.register
def _flush_at_exit() -> None:
    if _RECORDER:
        with contextlib.suppress(Exception):
            _RECORDER[0].close()
