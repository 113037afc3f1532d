"""Flower's plumbing for federated personalization (`models.training.federated`): whether the
`federated` extra is installed, Flower's log without its deprecation notices, the server run in
the calling thread, waiting for a server's port, and taking turns when clients and server share
a process.

The federation uses Flower's `start_server`/`start_client` on purpose (one address, no app
bundle to install); Flower marks them deprecated in favour of its SuperLink, so those notices
are filtered from the log.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from models.errors import TrainingError

__all__ = ["flower_log", "flower_version", "require_flower", "run_server", "taking_turns", "wait_for_port"]


class _FlowerLog(logging.Filter):
    """Drops Flower's notices that its `start_server`/`start_client` are deprecated (we use
    them on purpose: one address, no app bundle), and below `level` what a quiet run hides."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return False
        text = record.getMessage()
        return "deprecated" not in text and "flower-super" not in text


@contextlib.contextmanager
def flower_log(level: int = logging.INFO) -> Iterator[None]:
    """Flower's log, without its deprecation notices (and below `level`) while inside."""
    logger = logging.getLogger("flwr")
    f = _FlowerLog(level)
    logger.addFilter(f)
    try:
        yield
    finally:
        logger.removeFilter(f)


def flower_version() -> str | None:
    """Flower's version, or None without the `federated` extra (Flower and dp-accounting)."""
    from models.fileio import optional_version

    if optional_version("dp-accounting", "dp_accounting") is None:
        return None
    return optional_version("flwr", "flwr")


def require_flower() -> None:
    if flower_version() is None:
        raise TrainingError(
            "federated learning needs Flower and dp-accounting: pip install 'companion-models[federated]'"
        )


def run_server(address: str, rounds: int, strat: Any, timeout: float | None, certificates: Any = None) -> None:
    from flwr.compat.server.app import start_server
    from flwr.server import ServerConfig

    start_server(server_address=address, config=ServerConfig(num_rounds=rounds, round_timeout=timeout),
                 strategy=strat, certificates=certificates)  # fmt: skip


def wait_for_port(address: str, timeout: float = 60.0) -> None:
    """Until the server at `address` accepts connections (Flower's clients give up on a refused one)."""
    import socket

    host, port = address.rsplit(":", 1)
    end = time.time() + timeout
    while time.time() < end:
        with socket.socket() as s:
            if s.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.05)
    raise TrainingError(f"the Flower server at {address} did not start")


def taking_turns(strat: Any, clients: list[Any]) -> tuple[Any, list[Any]]:
    """`strat` and `clients` (Flower `Client`s) wrapped so that no two of them run at once.

    A loopback simulation runs the server and every client in one process. Flower decodes arrays
    with `np.load`, which parses each header with `ast.literal_eval`, and CPython 3.11's AST
    builder keeps its recursion depth in interpreter-wide state: two threads parsing at once can
    fail with "SystemError: AST constructor recursion depth mismatch" (CPython gh-106905; seen
    once in this project's CI). The rounds' work is a few small arrays, so taking turns costs
    nothing that matters.
    """
    from flwr.client import Client
    from flwr.server.strategy import Strategy

    lock = threading.Lock()
    strategy = _in_turn(Strategy, lock, ("initialize_parameters", "configure_fit", "aggregate_fit",
                                         "configure_evaluate", "aggregate_evaluate", "evaluate"))  # fmt: skip
    client = _in_turn(Client, lock, ("get_properties", "get_parameters", "fit", "evaluate"))
    return strategy(strat), [client(c) for c in clients]


def _in_turn(base: type, lock: threading.Lock, methods: tuple[str, ...]) -> type:
    """A `base` subclass around an inner object whose `methods` call the inner one's under `lock`."""

    def init(self: Any, inner: Any) -> None:
        self.inner = inner

    def turn(name: str) -> Any:
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return getattr(self.inner, name)(*args, **kwargs)

        method.__name__ = name
        return method

    return type(f"InTurn{base.__name__}", (base,), {"__init__": init, **{name: turn(name) for name in methods}})
