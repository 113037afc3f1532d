"""`ServerSettings`: where the server listens, who may call it, and its limits."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, fields
from typing import Literal

from models.errors import ConfigError

__all__ = ["Limits", "ServerSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Limits:
    """Per-request and per-key limits; going over one is a clear 4xx, never a queue that grows."""

    max_body_bytes: int = field(default=1_000_000, metadata={"help": "Largest request body (413 above)."})
    max_tokens: int = field(default=512, metadata={"help": "Largest max_tokens (400 above)."})
    max_n: int = field(default=4, metadata={"help": "Most choices per request (400 above)."})
    max_streams_per_key: int = field(default=8, metadata={"help": "Open streams per user (429 above)."})
    max_requests_per_key: int = field(
        default=8,
        metadata={"help": "Generations in flight per user, streamed or not; n choices count n (429 above)."},
    )
    max_stop: int = field(default=4, metadata={"help": "Most stop sequences."})
    workers: int = field(default=64, metadata={"help": "Threads that run generations (queued beyond)."})
    writes_per_second: float = field(
        default=10.0,
        metadata={
            "help": "Writes (preferences, memory, feedback, chats, cards) per user per second, in bursts of up to "
            "twice that (429 above; 0: no limit). Generations have their own limits."
        },
    )
    batch_rows: int = field(
        default=64,
        metadata={"help": "Streams a local model decodes together, continuous batching (0: one at a time)."},
    )
    engine_process: bool = field(
        default=False,
        metadata={
            "help": "Run each batching engine's scheduler in a process of its own, apart from the server's "
            "request handling (docs/serving.md)."
        },
    )


@dataclass(frozen=True)
class ServerSettings:
    """`auth="local"`: requests without a key act as the local owner; allowed only on loopback.
    `auth="keys"`: every request needs `Authorization: Bearer <key>` (`companion users key create`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    auth: Literal["local", "keys"] | None = None  # None: local on loopback, keys elsewhere
    personalization: str | None = "user_prefs"  # answers are logged under it (feedback); None: not logged
    limits: Limits = field(default_factory=Limits)

    @property
    def mode(self) -> Literal["local", "keys"]:
        if self.auth is not None:
            return self.auth
        return "local" if is_loopback(self.host) else "keys"

    def check(self) -> ServerSettings:
        """Every problem at once, as a ConfigError; returns self when there is none."""
        problems = []
        if self.mode == "local" and not is_loopback(self.host):
            problems.append(
                f"local mode (no API keys) is only allowed on loopback, not on {self.host!r}; "
                "create keys with `companion users key create USER` and drop the local mode"
            )
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, not {self.port}")
        off = ("batch_rows", "writes_per_second", "engine_process")  # 0 turns these off
        for limit in fields(self.limits):  # every limit is a count, a size or a rate
            least = 0 if limit.name in off else 1
            if getattr(self.limits, limit.name) < least:
                problems.append(f"limits.{limit.name} must be >= {least}")
        if problems:
            raise ConfigError("serve", problems)
        return self
