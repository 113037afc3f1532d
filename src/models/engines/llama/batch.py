"""Best-of-N decoding on the `fast` engine: one prompt, N sampled continuations, one pass each.

Decode of a small model is bound by streaming its weights once per token, so N sequences
stepped together (one matmul per weight for all rows) cost little more than one. The prompt is
prefilled once (`FastEngine.prefill`); its KV cache is copied to N rows (`expand_cache`); then
every step feeds each live row's last token at the same position (the rows share the prompt,
so they stay aligned) through `forward_rows` (the scheduler's compiled step where the weights
allow), and each row's token is picked from its own logits with its own `DecodeRow` (sampler,
stop ids, stop strings, length limit): the rows' shared arithmetic done once by the scheduler's
`pick_rows`, the same tokens as one row at a time (Luna's best of 8: 204-208 ms a reply on one
thread, against 220-240 ms when each row picked alone and the block ran eager). A finished row
is dropped from the batch (its cache rows with it), so it costs nothing.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from models.engines.base import Candidate, DecodeRow, SamplingParams, row_seeds
from models.engines.sampling import pick_rows

if TYPE_CHECKING:
    from models.engines.llama.engine import FastEngine

__all__ = ["BatchDecoder", "decode_many"]


class BatchDecoder:
    """N rows continuing one prompt: prefill once, then `step(tokens)` for all live rows."""

    def __init__(self, engine: FastEngine, ids: list[int], rows: int, max_new: int) -> None:
        self.engine = engine
        self.logits = engine.prefill(ids)  # (vocab,): what every row samples its first token from
        self.pos = len(ids)
        self.cache = engine.expand_cache(rows, len(ids) + max(1, max_new))

    @property
    def rows(self) -> int:
        return self.cache.rows

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (by their current index), in this order."""
        with self.engine.scope():
            self.cache.select(rows)

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed one token per row at the next position; return the rows' logits (rows, vocab)."""
        if len(tokens) != self.rows:
            raise ValueError(f"step got {len(tokens)} tokens for {self.rows} rows")
        if self.pos >= self.cache.capacity:
            raise ValueError(f"position {self.pos} is past the batch cache ({self.cache.capacity})")
        logits = self.engine.forward_rows(tokens, self.cache, self.pos)
        self.pos += 1
        return logits


def decode_many(
    engine: FastEngine, ids: list[int], params: SamplingParams, n: int, suppress: torch.Tensor | None = None
) -> list[Candidate]:
    """N continuations of `ids` decoded together (see the module doc); row i's seed is
    `row_seeds(params, n)[i]`. Sets `engine.last_stats` (completion tokens summed over rows)."""
    stats, ids, max_new, t0 = engine.begin(ids, params)
    if max_new <= 0:
        return [Candidate("", 0, "length") for _ in range(n)]
    rows = [
        DecodeRow(engine.codec, ids, params.but(seed=seed), max_new, logprobs=True) for seed in row_seeds(params, n)
    ]
    live = list(range(n))  # batch index -> row
    with engine.scope():  # picking too: at the engine's thread count, not torch's default
        decoder = BatchDecoder(engine, ids, n, max_new)
        logits = decoder.logits[None].expand(n, -1)
        while True:
            if suppress is not None and len(suppress):
                logits = logits.index_fill(1, suppress, float("-inf"))
            tokens = _pick(rows, live, logits)
            if stats.time_to_first_token_s is None and any(rows[r].pieces for r in live):
                stats.time_to_first_token_s = time.perf_counter() - t0
            still = [i for i, r in enumerate(live) if not rows[r].done]
            if not still:
                break
            decoder.keep(still)
            live = [live[i] for i in still]
            logits = decoder.step([tokens[i] for i in still])
    out = [row.result() for row in rows]
    stats.completion_tokens = sum(c.completion_tokens for c in out)
    stats.finish_reason = "stop" if all(c.finish_reason == "stop" for c in out) else "length"
    stats.extra.update(rows=n, row_tokens=[c.completion_tokens for c in out])
    stats.total_s = time.perf_counter() - t0
    return out


def _pick(rows: Sequence[DecodeRow], live: Sequence[int], logits: torch.Tensor) -> list[int]:
    """Each live row's next token, recorded: the rows without a grammar picked together
    (`sampling.pick_rows`, the scheduler's way: the same tokens as one row at a time, with each
    group's shared arithmetic done once), a row with one through its own `take`."""
    plain = [i for i, r in enumerate(live) if rows[r].structure is None]
    picked = dict(zip(plain, pick_rows([rows[live[i]].sampler for i in plain], logits[plain]), strict=True))
    return [
        rows[r].record(picked[i], logits[i]) if i in picked else rows[r].take(logits[i]) for i, r in enumerate(live)
    ]
