"""Best-of-N decoding on the `fast` engine: one prompt, N sampled continuations, one pass each.

Decode of a small model is bound by streaming its weights once per token, so N sequences
stepped together (one matmul per weight for all rows) cost little more than one. The prompt is
prefilled once through the engine's own `_prefill`; its KV cache is copied to N rows of a
batch cache; then every step feeds each live row's last token at the same position (the rows
share the prompt, so they stay aligned) and each row samples from its own logits through its
own `DecodeRow` (sampler, stop ids, stop strings, length limit), the same per-token code as
`LocalEngine._decode` runs for one. A finished row is dropped from the batch (its cache rows
with it), so it costs nothing.

The step uses the engine's matrices through `FastEngine._matrices()`: the fused fp32/bf16
ones, or the packed int8 ones `quant.quantize_int8` installs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from models.engines.base import Candidate, DecodeRow, GenerationStats, SamplingParams, row_seeds
from models.engines.fast import _Scope

if TYPE_CHECKING:
    from models.engines.fast import FastEngine

__all__ = ["BatchDecoder", "decode_many"]


class BatchDecoder:
    """N rows continuing one prompt: prefill once, then `step(tokens)` for all live rows."""

    def __init__(self, engine: FastEngine, ids: list[int], rows: int, max_new: int) -> None:
        spec = engine.spec
        self.engine = engine
        self.logits = engine._prefill(ids)  # (vocab,): what every row samples its first token from
        self.pos = len(ids)
        capacity = len(ids) + max(1, max_new)
        shape = (spec.num_layers, 2, rows, spec.num_kv_heads, capacity, spec.head_dim)
        with _Scope(engine.threads):
            engine._ensure_capacity(capacity)  # the RoPE table must reach the last position
            self.kv = torch.zeros(shape, dtype=engine._kv.dtype)
            self.kv[:, :, :, :, : self.pos] = engine._kv[:, :, None, :, : self.pos]
        self.layers, self.head, self.mm = engine._matrices()

    @property
    def rows(self) -> int:
        return self.kv.shape[2]

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only these rows (by their current index), in this order."""
        if list(rows) != list(range(self.rows)):
            with _Scope(self.engine.threads):
                self.kv = self.kv.index_select(2, torch.tensor(list(rows), dtype=torch.long))

    def step(self, tokens: Sequence[int]) -> torch.Tensor:
        """Feed one token per row at the next position; return the rows' logits (rows, vocab)."""
        engine, spec = self.engine, self.engine.spec
        b, pos = len(tokens), self.pos
        if b != self.rows:
            raise ValueError(f"step got {b} tokens for {self.rows} rows")
        if pos >= self.kv.shape[4]:
            raise ValueError(f"position {pos} is past the batch cache ({self.kv.shape[4]})")
        hidden, eps, mm = (spec.hidden_size,), spec.rms_norm_eps, self.mm
        nq, nkv, inter, d = engine._nq, engine._nkv, spec.intermediate_size, spec.head_dim
        kvh, group = spec.num_kv_heads, spec.num_heads // spec.num_kv_heads
        pairs = (b, spec.num_heads + kvh, 2, d // 2)
        cos, sin, n = engine._cos[pos], engine._sin[pos], pos + 1
        x = engine._embed[torch.tensor(list(tokens), dtype=torch.long)]
        with _Scope(engine.threads):
            for (w_qkv, w_o, w_gate_up, w_down), kv in zip(self.layers, self.kv, strict=True):
                qkv = mm(F.rms_norm(x, hidden, None, eps), w_qkv)
                qk = qkv[:, : nq + nkv].view(pairs)
                swapped = qk.flip(2)
                qk.mul_(cos).addcmul_(swapped, sin)
                kv[:, :, :, pos].copy_(qkv[:, nq:].view(b, 2, kvh, d).transpose(0, 1))
                q = qkv[:, :nq].reshape(b, kvh, group, d)
                scores = torch.matmul(q, kv[0, :, :, :n].transpose(2, 3))
                att = torch.matmul(torch.softmax(scores, dim=-1), kv[1, :, :, :n])
                x = mm(att.reshape(b, nq), w_o).add_(x)
                gate_up = mm(F.rms_norm(x, hidden, None, eps), w_gate_up)
                x = mm(F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), w_down).add_(x)
            logits = mm(F.rms_norm(x, hidden, None, eps), self.head)
        self.pos += 1
        return logits


def decode_many(
    engine: FastEngine, ids: list[int], params: SamplingParams, n: int, suppress: torch.Tensor | None = None
) -> list[Candidate]:
    """N continuations of `ids` decoded together (see the module doc); row i's seed is
    `row_seeds(params, n)[i]`. Sets `engine.last_stats` (completion tokens summed over rows)."""
    stats = GenerationStats()
    engine.last_stats = stats
    t0 = time.perf_counter()
    ids = engine._fit_prompt(ids, params, stats)
    stats.prompt_tokens = len(ids)
    max_new = min(params.max_new_tokens, engine.max_positions - len(ids))
    if max_new <= 0:
        stats.total_s = time.perf_counter() - t0
        return [Candidate("", 0, "length") for _ in range(n)]
    rows = [DecodeRow(engine.codec, ids, params.but(seed=seed), max_new) for seed in row_seeds(params, n)]
    live = list(range(n))  # batch index -> row
    decoder = BatchDecoder(engine, ids, n, max_new)
    logits = decoder.logits[None].expand(n, -1)
    while True:
        if suppress is not None and len(suppress):
            logits = logits.index_fill(1, suppress, float("-inf"))
        tokens = [rows[r].take(logits[i]) for i, r in enumerate(live)]
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
