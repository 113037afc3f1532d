"""The KV cache and the RoPE table: the decoder's state between steps.

`KVCache.data` is one preallocated tensor (layers × 2 × rows × kv_heads × capacity × head_dim):
a step writes each layer's new K and V with one copy, attention reads the slice up to the
current position. It grows by doubling (data kept), selects rows (a finished row of a batch is
dropped with its cache), and `expand` copies one prefilled row into N for best-of-N.

`RopeTable` holds cos and sin per position as (position, 2, head_dim/2) with the sine's first
half negated, so rotating is `x*cos + swap_halves(x)*sin`: three element-wise ops, no `cat`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.engines.llama.spec import LlamaSpec
from models.errors import GenerationInputError

__all__ = ["KVCache", "RopeTable"]


class RopeTable:
    """cos/sin for positions `0..capacity-1`, computed as transformers does (fp32 inv_freq)."""

    def __init__(self, spec: LlamaSpec, capacity: int, dtype: torch.dtype) -> None:
        exponent = torch.arange(0, spec.head_dim, 2, dtype=torch.float) / spec.head_dim
        inv_freq = 1.0 / (spec.rope_theta**exponent)
        freqs = torch.arange(capacity, dtype=torch.float)[:, None] * inv_freq[None, :]
        cos, sin = freqs.cos(), freqs.sin()
        self.cos = torch.stack((cos, cos), dim=1).to(dtype)
        self.sin = torch.stack((-sin, sin), dim=1).to(dtype)
        self.capacity = capacity


class KVCache:
    """Keys and values of `rows` sequences for every layer, up to `capacity` positions."""

    def __init__(self, spec: LlamaSpec, rows: int, capacity: int, dtype: torch.dtype) -> None:
        if capacity > spec.max_positions:
            raise GenerationInputError(f"{capacity} tokens exceed the model's context of {spec.max_positions}")
        self.spec = spec
        self.data = torch.zeros((spec.num_layers, 2, rows, spec.num_kv_heads, capacity, spec.head_dim), dtype=dtype)

    @property
    def rows(self) -> int:
        return self.data.shape[2]

    @property
    def capacity(self) -> int:
        return self.data.shape[4]

    @property
    def dtype(self) -> torch.dtype:
        return self.data.dtype

    def grow(self, n: int) -> bool:
        """Hold at least `n` positions (doubling, up to the model's context); whether it grew."""
        if n <= self.capacity:
            return False
        if n > self.spec.max_positions:
            raise GenerationInputError(f"{n} tokens exceed the model's context of {self.spec.max_positions}")
        cap = min(self.spec.max_positions, max(n, 2 * self.capacity))
        data = self.data.new_zeros((*self.data.shape[:4], cap, self.data.shape[5]))
        data[..., : self.capacity, :] = self.data
        self.data = data
        return True

    def select(self, rows: Sequence[int]) -> None:
        """Keep only these rows (by their current index), in this order."""
        if list(rows) != list(range(self.rows)):
            self.data = self.data.index_select(2, torch.tensor(list(rows), dtype=torch.long))

    def expand(self, rows: int, filled: int, capacity: int) -> KVCache:
        """A new cache of `rows` copies of row 0's first `filled` positions, room for `capacity`."""
        out = KVCache(self.spec, rows, capacity, self.dtype)
        out.data[..., :filled, :] = self.data[:, :, :1, :, :filled]
        return out
