"""Seeded token sampling: repetition penalty, temperature, top-k, top-p (nucleus).

The same `seed` and logits give the same tokens on every run and every engine. The order of
operations follows `transformers`' logits processors (penalty, temperature, top-k, top-p), so a
model decodes alike here and under `generate()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from models.engines.base import SamplingParams

__all__ = ["Sampler"]


class Sampler:
    """Picks one token at a time; remembers what it has seen for the repetition penalty."""

    def __init__(self, params: SamplingParams, history: Sequence[int] = ()) -> None:
        self.p = params
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(int(params.seed))
        else:
            self.generator.seed()
        self._seen: torch.Tensor | None = None
        self._history = list(history)

    def _penalize(self, logits: torch.Tensor) -> torch.Tensor:
        if self._seen is None:
            self._seen = torch.zeros(logits.shape[-1], dtype=torch.bool)
            if self._history:
                idx = torch.tensor([t for t in self._history if 0 <= t < logits.shape[-1]], dtype=torch.long)
                self._seen[idx] = True
        rp = self.p.repetition_penalty
        penalized = torch.where(logits > 0, logits / rp, logits * rp)
        return torch.where(self._seen, penalized, logits)

    def pick(self, logits: torch.Tensor) -> int:
        """The next token id for a (vocab,) logits vector."""
        logits = logits.float().clone()
        if self.p.repetition_penalty != 1.0:
            logits = self._penalize(logits)
        if self.p.temperature == 0:
            token = int(torch.argmax(logits))
        else:
            logits = logits / self.p.temperature
            if self.p.top_k and self.p.top_k < logits.shape[-1]:
                kth = torch.topk(logits, self.p.top_k).values[-1]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            if self.p.top_p < 1.0:
                sorted_logits, order = torch.sort(logits, descending=True)
                cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
                drop = cum - torch.softmax(sorted_logits, dim=-1) > self.p.top_p
                sorted_logits[drop] = float("-inf")
                logits = torch.full_like(logits, float("-inf")).scatter(0, order, sorted_logits)
            probs = torch.softmax(logits, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        if self._seen is not None:
            self._seen[token] = True
        else:
            self._history.append(token)
        return token
