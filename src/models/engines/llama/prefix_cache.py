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
        # ids → (K/V, the ids as an array for a vectorized longest-prefix search)
        self._entries: OrderedDict[tuple[int, ...], tuple[torch.Tensor, np.ndarray]] = OrderedDict()

    def keys(self) -> list[tuple[int, ...]]:
        """The cached prompts, least recently used first."""
        return list(self._entries)

    def longest(self, ids: list[int]) -> tuple[int, torch.Tensor | None]:
        """The longest cached prefix of `ids` (leaving at least one token to compute, for the
        logits): how many tokens it covers and the K/V holding them (None under `MIN_TOKENS`)."""
        best, best_kv, best_key = 0, None, None
        want = np.asarray(ids)
        for key, (kv, arr) in self._entries.items():
            n = min(len(arr), len(want) - 1)
            differ = np.flatnonzero(arr[:n] != want[:n])
            common = int(differ[0]) if len(differ) else n
            if common > best:
                best, best_kv, best_key = common, kv, key
        if best_kv is None or best < MIN_TOKENS:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        return best, best_kv

    def remember(self, ids: list[int], kv: torch.Tensor) -> None:
        """Keep `kv` (the prompt's positions of one row's cache) for `ids`, copied; the least
        recently used prompts go while the budget is exceeded."""
        key = tuple(ids)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        if len(key) < MIN_TOKENS or kv.nbytes > self.max_bytes:
            return
        self._entries[key] = (kv.clone(), np.asarray(key))
        self.held += kv.nbytes
        while self.held > self.max_bytes:
            _key, (old, _ids) = self._entries.popitem(last=False)
            self.held -= old.nbytes
