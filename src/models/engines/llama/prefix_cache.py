"""Automatic prefix caching for the continuous-batching scheduler (as vLLM and llama.cpp's
server do): the K/V of recent prompts, reused by a later prompt that starts the same way (a
character's card is the same for every turn, so only the new turns are computed).

Prompts are kept whole, least recently used first out of a byte budget rather than a count,
since one prompt's K/V ranges from a few hundred kilobytes (the embedded model) to hundreds of
megabytes (a long prompt on a large model)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

__all__ = ["PrefixCache"]

MIN_TOKENS = 16  # a shorter match is not worth a copy


class PrefixCache:
    """Prompt ids → their K/V (`KVCache.data` of one row, the prompt's positions only)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0  # bytes of the cached prefixes
        self.hits = 0
        self._entries: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()  # LRU order
        # Every cached prompt's ids as one row of a padded matrix (-1 past its end), so the
        # longest-prefix search is one comparison over all of them, not a loop (`_rows`).
        self._keys: list[tuple[int, ...] | None] = []
        self._ids: np.ndarray | None = None

    def keys(self) -> list[tuple[int, ...]]:
        """The cached prompts, least recently used first."""
        return list(self._entries)

    def _rows(self) -> np.ndarray:
        if self._ids is None:
            width = max((len(k) for k in self._keys if k is not None), default=0)
            ids = np.full((len(self._keys), width), -1, dtype=np.int64)
            for i, key in enumerate(self._keys):
                if key is not None:
                    ids[i, : len(key)] = key
            self._ids = ids
        return self._ids

    def longest(self, ids: list[int]) -> tuple[int, torch.Tensor | None]:
        """The longest cached prefix of `ids` (leaving at least one token to compute, for the
        logits): how many tokens it covers and the K/V holding them (None under `MIN_TOKENS`)."""
        if not self._entries:
            return 0, None
        rows = self._rows()
        n = min(rows.shape[1], len(ids) - 1)
        if n < MIN_TOKENS:
            return 0, None
        same = rows[:, :n] == np.asarray(ids[:n])
        common = np.where(same.all(axis=1), n, same.argmin(axis=1))  # where each first differs
        best = int(common.argmax())
        key = self._keys[best]
        if key is None or common[best] < MIN_TOKENS:
            return 0, None
        self._entries.move_to_end(key)
        self.hits += 1
        return int(common[best]), self._entries[key]

    def remember(self, ids: list[int], kv: torch.Tensor) -> None:
        """Keep `kv` (the prompt's positions of one row's cache) for `ids`, copied; the least
        recently used prompts go while the budget is exceeded."""
        key = tuple(ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if len(key) < MIN_TOKENS or kv.nbytes > self.max_bytes:
            return
        self._entries[key] = kv.clone()
        free = next((i for i, k in enumerate(self._keys) if k is None), len(self._keys))
        if free == len(self._keys):
            self._keys.append(key)
        else:
            self._keys[free] = key
        self._ids = None
        self.held += kv.nbytes
        while self.held > self.max_bytes:
            old_key, old = self._entries.popitem(last=False)
            self._keys[self._keys.index(old_key)] = None
            self.held -= old.nbytes
