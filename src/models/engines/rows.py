"""One row of a decode: its seed, its per-token state, its result.

A generation decodes one row (a single reply) or many (best-of-N candidates, the rows of a
continuous batch). Each row samples with its own seed (`derived_seed` / `row_seeds`), keeps its
own sampler, detokenizer and stop state (`DecodeRow`), and ends as a `Candidate`. The single
decode (`base.LocalEngine._decode`), the batched one (`llama/batch.py`) and the scheduler
(`llama/scheduler.py`) all run this same per-token code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from models.engines.sampling import Sampler

if TYPE_CHECKING:
    from models.engines.base import SamplingParams
    from models.engines.codec import TextCodec

__all__ = ["Candidate", "DecodeRow", "check_rows", "derived_seed", "row_seeds"]


@dataclass(frozen=True)
class Candidate:
    """One of `sample_many`'s continuations."""

    text: str
    completion_tokens: int
    finish_reason: str
    logprob: float | None = field(default=None, compare=False)
    """Sum of the model's own log-probabilities (raw logits, before any bias, penalty, guide or
    temperature) of every token the row picked, its end-of-turn token included; None where the
    engine does not see logits. Best-of-N ranks candidates by its mean (`mean_logprob`)."""
    scored_tokens: int = field(default=0, compare=False)

    @property
    def mean_logprob(self) -> float | None:
        """`logprob` per scored token (None where the engine gave none)."""
        return None if self.logprob is None or not self.scored_tokens else self.logprob / self.scored_tokens


def derived_seed(seed: int, i: int) -> int:
    """Row i's seed under `seed`: `seed` itself for row 0 (one row is the single decode), else a
    hash of both in [0, 2**31) (a range every sampler takes, llama.cpp's 32-bit seeds included).
    Not `seed + i`: that way seed 1's candidates would be seed 0's shifted by one, so best-of-8
    with seeds 0 and 1 (a swipe, or OpenAI's `n` with a seed) shared 7 of 8 samples and
    usually picked the same reply."""
    if i == 0:
        return seed
    digest = hashlib.blake2b(f"{seed}/{i}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


def row_seeds(params: SamplingParams, n: int) -> list[int | None]:
    """The seed of each of `sample_many`'s n rows (`derived_seed(seed, i)`; row 0 is the single
    decode with `params`), or all None (independent random streams) when `params.seed` is None."""
    return [None if params.seed is None else derived_seed(params.seed, i) for i in range(n)]


def check_rows(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        from models.errors import GenerationInputError

        raise GenerationInputError(f"n (the number of candidates) must be an integer >= 1, not {n!r}")


class DecodeRow:
    """One sequence's sampler, incremental detokenizer and stop state: what happens to each
    sampled token, in the single decode (`LocalEngine._decode`) and in every row of a batched
    one (`engines/llama/batch.py`). `pieces` collects the text; `done` says when to stop stepping."""

    def __init__(
        self, codec: TextCodec, ids: list[int], params: SamplingParams, max_new: int, logprobs: bool = False
    ) -> None:
        self.params = params
        self.logprobs = logprobs
        self.logprob = 0.0
        self.scored = 0
        self.codec = codec
        self.token_logprobs: list[dict[str, Any]] | None = [] if params.logprobs is not None else None
        self.sampler = Sampler(params, history=ids)
        self.structure = None
        if params.response_format is not None or params.tools:
            from models.engines.structured import Structure, row_grammar

            grammar = row_grammar(params)
            if grammar is not None:
                self.structure = Structure(codec, grammar, max_new)
        self.detok = codec.stream_decoder()
        self.stop_ids = codec.stop_ids
        self.max_new = max_new
        self.pieces: list[str] = []
        self.text_so_far = ""
        self.tokens = 0
        self.finish = "length"
        self.done = False

    def take(self, logits: torch.Tensor) -> int:
        """Sample the next token from (vocab,) logits and record it (and any text it completes)."""
        raw = logits
        if self.structure is not None:
            logits = self.structure.mask(logits.float())
        return self.record(self.sampler.pick(logits), raw)

    def record(self, token: int, raw: torch.Tensor) -> int:
        """Record `token`, sampled from the row's (vocab,) logits `raw` (a batched decode picks
        many rows' tokens at once with `sampling.pick_rows`, then records each)."""
        if self.structure is not None and token not in self.stop_ids:
            self.structure.consume(token)
        if self.logprobs or self.token_logprobs is not None:
            logp = torch.log_softmax(raw.float(), -1)
            self.logprob += float(logp[token])
            self.scored += 1
            if self.token_logprobs is not None and token not in self.stop_ids:
                self.token_logprobs.append(self._entry(token, logp))
        if token in self.stop_ids:
            self.finish, self.done = "stop", True
            return token
        self.tokens += 1
        piece = self.detok.push(token)
        if piece:
            if self.params.stop:
                self.text_so_far += piece
                cut = _find_stop(self.text_so_far, self.params.stop)
                if cut is not None:
                    emitted = len(self.text_so_far) - len(piece)
                    if cut > emitted:
                        self.pieces.append(self.text_so_far[emitted:cut])
                    self.finish, self.done = "stop", True
                    return token
            self.pieces.append(piece)
        if self.tokens >= self.max_new:
            self.done = True
        return token

    def _entry(self, token: int, logp: torch.Tensor) -> dict[str, Any]:
        """OpenAI's per-token record: the token's text and bytes, its log-probability, the top ones."""

        def item(tid: int, value: float) -> dict[str, Any]:
            text = self.codec.decode([tid], skip_special_tokens=True)  # as the text shows it
            return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8")), "id": tid}

        entry = item(token, float(logp[token]))
        k = int(self.params.logprobs or 0)
        top = torch.topk(logp, k) if k else None
        entry["top_logprobs"] = [item(int(i), float(v)) for v, i in zip(*top, strict=True)] if top else []
        return entry

    def tail(self) -> str:
        """Text held back by the detokenizer (none after a stop: the stop ends the text)."""
        return "" if self.finish == "stop" else self.detok.flush()

    def result(self) -> Candidate:
        tail = self.tail()
        if tail:
            self.pieces.append(tail)
        logprob = self.logprob if self.logprobs else None
        return Candidate("".join(self.pieces), self.tokens, self.finish, logprob, self.scored)


def _find_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None
