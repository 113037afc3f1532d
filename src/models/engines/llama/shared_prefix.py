"""The prompt prefix a batch's rows share, read once per step (cascade attention).

Every row of a character's batch starts with the same card. `SharedSegment` keeps one segment,
the prompt of a row that joined earlier, with its keys and values. A joining row shares it as
far as the two prompts agree and the row's cache holds the very same numbers there (a prefix
copied from the prefix cache does; one computed apart may differ in rounding, and then the row
attends over its own cache). A step whose rows all share it passes `for_rows` to
`block.step_rows` / the compiled step, which read those positions once for the whole batch
(`block.shared_attention`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["MIN_TOKENS", "Share", "SharedSegment"]

MIN_TOKENS = 64  # a shorter common prefix is not worth reading apart

#: What a row holds of the segment: (the segment's K/V, how many of its positions).
Share = tuple[torch.Tensor, int]


class SharedSegment:
    """The scheduler's one shared segment (see the module docstring)."""

    def __init__(self) -> None:
        self._ids: list[int] = []
        self._kv: torch.Tensor | None = None  # (layers, 2, 1, kv_heads, n, d)

    def join(self, ids: Sequence[int], filled: int, kv: torch.Tensor, running: Iterable[Share | None]) -> Share | None:
        """How much of the segment a joining row holds: `ids` its prompt, `kv` its one-row cache
        data with `filled` positions written, `running` what the running rows hold. A row that
        shares nothing while no running row uses the segment makes its own prompt the segment
        (the character or the card changed)."""
        seg = self._kv
        if seg is not None:
            n = min(len(self._ids), filled)
            same = next((i for i in range(n) if self._ids[i] != ids[i]), n)
            if same >= MIN_TOKENS and torch.equal(kv[..., :same, :], seg[..., :same, :]):
                return seg, same
            if any(share is not None and share[0] is seg for share in running):
                return None
        if filled < MIN_TOKENS:
            return None
        self._ids, self._kv = list(ids[:filled]), kv[..., :filled, :].clone()
        return self._kv, filled


def for_rows(shares: Sequence[Share | None]) -> torch.Tensor | None:
    """The segment's keys and values (layers, 2, kv_heads, L, d) as far as every row holds
    them, or None (one row, or a row that does not share it)."""
    if len(shares) < 2 or shares[0] is None:
        return None
    seg, n = shares[0]
    for share in shares:
        if share is None or share[0] is not seg:
            return None
        n = min(n, share[1])
    return seg[:, :, 0, :, :n] if n >= MIN_TOKENS else None
