"""The KV cache and the RoPE table: the decoder's state between steps.

`KVCache.data` is one preallocated tensor (layers × 2 × rows × kv_heads × capacity × head_dim):
a step writes each layer's new K and V with one copy, attention reads the slice up to the
current position. It grows by doubling (data kept), selects rows (a finished row of a batch is
dropped with its cache), and `expand` copies one prefilled row into N for best-of-N.

`RopeTable` holds cos and sin per position as (position, 2, head_dim/2) with the sine's first
half negated, so rotating is `x*cos + swap_halves(x)*sin`: three element-wise ops, no `cat`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from models.engines.llama.spec import LlamaSpec
from models.errors import GenerationInputError

__all__ = ["KVCache", "RopeTable"]


def rope_inv_freq(spec: LlamaSpec) -> torch.Tensor:
    """RoPE's inverse frequencies, as transformers computes them: plain, or with Llama 3.1's
    frequency scaling (`rope_type: llama3`: wavelengths longer than the original context over
    `low_freq_factor` are divided by `factor`, shorter than it over `high_freq_factor` kept,
    and the band between interpolated smoothly)."""
    exponent = torch.arange(0, spec.head_dim, 2, dtype=torch.int64).float() / spec.head_dim
    inv_freq = 1.0 / (spec.rope_theta**exponent)
    rope = spec.rope_settings
    if rope.get("rope_type", rope.get("type", "default")) != "llama3":
        return inv_freq
    factor, low, high = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    old = float(rope["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, smoothed, scaled)


class RopeTable:
    """cos/sin for positions `0..capacity-1`, computed as transformers does (fp32 inv_freq)."""

    def __init__(self, spec: LlamaSpec, capacity: int, dtype: torch.dtype) -> None:
        inv_freq = rope_inv_freq(spec)
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

    def reserve_rows(self, n: int) -> None:
        """Room for at least `n` rows (doubling; rows kept). The continuous-batching scheduler
        keeps its live rows in the first slots and moves rows in and out one at a time."""
        if n <= self.rows:
            return
        rows = max(n, 2 * self.rows, 4)
        data = self.data.new_zeros((*self.data.shape[:2], rows, *self.data.shape[3:]))
        data[:, :, : self.rows] = self.data
        self.data = data

    def move_row(self, src: int, dst: int, filled: int) -> None:
        """Copy row `src`'s first `filled` positions into row `dst` (the rest of `dst` is stale
        and masked by its position)."""
        self.data[:, :, dst, :, :filled] = self.data[:, :, src, :, :filled]

    def swap_rows(self, a: int, b: int, filled_a: int, filled_b: int) -> None:
        """Exchange rows `a` and `b` (their first `filled_a` / `filled_b` positions)."""
        keep = self.data[:, :, a, :, :filled_a].clone()
        self.data[:, :, a, :, :filled_b] = self.data[:, :, b, :, :filled_b]
        self.data[:, :, b, :, :filled_a] = keep

    def select(self, rows: Sequence[int]) -> None:
        """Keep only these rows (by their current index), in this order."""
        if list(rows) != list(range(self.rows)):
            self.data = self.data.index_select(2, torch.tensor(list(rows), dtype=torch.long))

    def expand(self, rows: int, filled: int, capacity: int) -> KVCache:
        """A new cache of `rows` copies of row 0's first `filled` positions, room for `capacity`."""
        out = KVCache(self.spec, rows, capacity, self.dtype)
        out.data[..., :filled, :] = self.data[:, :, :1, :, :filled]
        return out
