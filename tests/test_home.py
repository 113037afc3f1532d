"""models.home: the home secret is made once, even by many threads of one process at once."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path


def test_threads_creating_the_home_secret_at_once_agree(companion_home: Path) -> None:
    """Issue 15 item 11: the temporary file was named by process id only, so threads of one
    process collided (FileNotFoundError on the first concurrent preference writes of a fresh home,
    or a key mixed from two writers)."""
    from models.home import home_secret

    results: list[bytes] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def make() -> None:
        barrier.wait()
        try:
            results.append(home_secret("test-secret", lambda: secrets.token_bytes(32)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results[0]) == 32
    assert (companion_home / "keys" / "test-secret").read_bytes() == results[0]
    assert [p.name for p in (companion_home / "keys").iterdir()] == ["test-secret"]  # no temporary left
