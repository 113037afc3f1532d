"""Which running rows step now, when a light user shares the batch (`Scheduler._stepping`).

A step's cost grows with its rows, so one user's twenty streams admitted before another user's
one request would otherwise make every token of that request wait for twenty rows. While a
light user (at most `user_rows` rows live, none waiting) shares the batch with users holding
more, every user steps at most as many rows as the largest light user holds (an equal share),
its oldest, and the others keep their cache and wait (vLLM's scheduler preempts for priority in
the same spirit, though it drops the cache). When every user with work holds many rows, or a
user is alone, every row steps.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from models.engines.llama.tickets import Ticket

__all__ = ["shares", "stepping"]


def shares(running: Sequence[Ticket], light: Collection[str]) -> tuple[dict[str, list[int]], int]:
    """Each user's running rows (indexes into `running`) and the share of a step every user may
    have while a light user shares the batch: as many rows as the largest light user runs, at
    least one."""
    per_user: dict[str, list[int]] = {}
    for i, ticket in enumerate(running):
        per_user.setdefault(ticket.user, []).append(i)
    return per_user, max([len(per_user.get(user, ())) for user in light] + [1])


def stepping(running: Sequence[Ticket], light: Collection[str]) -> list[int] | None:
    """The rows that step now (indexes into `running`, ascending; a cancelled row always, so it
    is retired), or None for all (see the module docstring)."""
    if not light:
        return None
    per_user, share = shares(running, light)
    if all(len(rows) <= share for rows in per_user.values()):
        return None
    chosen: list[int] = []
    for rows in per_user.values():
        oldest = sorted(rows, key=lambda i: running[i].submitted)
        chosen += oldest[:share]
        chosen += [i for i in oldest[share:] if running[i].cancelled.is_set()]
    return sorted(chosen)
