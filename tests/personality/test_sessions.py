"""A personality's shared session state (`sessions.py`): stores from many threads land through
the group commit, each session's last state wins, and a reset queued after a store forgets it."""

from __future__ import annotations

import threading

from models.personality.sessions import load_session, save_session


def test_concurrent_stores_and_a_reset_land_in_arrival_order() -> None:
    barrier = threading.Barrier(16)

    def store(i: int) -> None:
        barrier.wait()
        for turn in range(3):
            save_session("personality/luna", f"user-{i}", {"values": {"joy": i / 16}, "turn": turn})

    threads = [threading.Thread(target=store, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(16):
        assert load_session("personality/luna", f"user-{i}") == {"values": {"joy": i / 16}, "turn": 2}
    save_session("personality/luna", "user-3", {"turn": 9})
    save_session("personality/luna", "user-3", None)
    assert load_session("personality/luna", "user-3") is None
    assert load_session("personality/luna", "user-4") is not None
