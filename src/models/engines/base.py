"""What every generation engine offers, and the decode loop local engines share.

An engine turns a prompt into text. `TransformerModel` is the public front; engines are
swappable behind it:

* `Engine` (abstract): `stream(prompt, params)` yields text pieces, `stream_chat(messages,
  params)` does the same for a chat, `score(texts)` returns total log-likelihoods, and
  `sample_many(prompt or messages, params, n)` returns n sampled `Candidate`s (one decode after
  another here; the `fast` engine decodes them together, `engines/llama/batch.py`).
* `LocalEngine`: an engine that owns weights in this process. Subclasses give three primitives
  (`prefill`, `_step`, `forward_full`); the decode loop lives here, once, and each row's
  seeded sampler, stop handling and incremental detokenization in `rows.DecodeRow`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from models.engines.codec import TextCodec
from models.engines.rows import Candidate, DecodeRow, check_rows, derived_seed, row_seeds
from models.engines.sampling import LogitsGuide

# Candidate, DecodeRow and the row seeds live in `rows.py` and are re-exported here.
__all__ = [
    "Candidate",
    "DecodeRow",
    "Engine",
    "GenerationStats",
    "LocalEngine",
    "PerThread",
    "SamplingParams",
    "check_rows",
    "derived_seed",
    "row_seeds",
]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. `temperature=0` means greedy."""

    max_new_tokens: int = 200
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    emotion: str | None = None
    """An emotion control label for models trained with emotion tokens (ignored by others)."""
    logit_bias: Mapping[int, float] | None = None
    """Token id → a value added to its logit before sampling, as OpenAI's `logit_bias`
    (-100 bans a token, +100 all but forces it)."""
    guide: LogitsGuide | None = None
    """Steers decoding token by token from what has been generated so far (local engines only;
    e.g. `models.personality.steering.EmotionGuide`). Remote engines ignore it."""
    presence_penalty: float = 0.0
    """OpenAI's: subtracted from the logit of every token already generated (-2..2)."""
    frequency_penalty: float = 0.0
    """OpenAI's: subtracted once per time a token has been generated (-2..2)."""
    min_p: float = 0.0
    """Keep only tokens at least this share of the most likely one's probability (0 = off)."""
    logprobs: int | None = None
    """Record each chosen token's log-probability and this many top alternatives (0..20; None:
    off), from the model's own distribution (raw logits): `last_stats.extra["logprobs"]`."""
    tools: tuple[Mapping[str, Any], ...] | None = None
    """Chat only: OpenAI's `tools`, rendered by a chat template that has a tool format."""
    tool_choice: str | None = None
    """none, auto, required, or a function's name (the last two decode under a grammar)."""
    response_format: Mapping[str, Any] | None = None
    """OpenAI's `response_format` (json_object or json_schema): local engines mask every token
    that would break it (`models.engines.structured`); the openai engine sends it on."""
    asked: frozenset[str] = frozenset()
    """Which of top_k, min_p and repetition_penalty this call set itself (not model defaults):
    the openai engine sends only those (`extra_body` sets them model-wide)."""
    continue_final: bool = False
    """Chat only: when the last message is the assistant's, continue it (its text is the start
    of the answer, no new turn is opened), as transformers' `continue_final_message`."""

    def but(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)

    def check(self) -> None:
        from models.errors import GenerationInputError

        problems = []
        if self.max_new_tokens < 0:
            problems.append(f"max_new_tokens must be >= 0, not {self.max_new_tokens}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, not {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], not {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, not {self.top_k}")
        if self.repetition_penalty <= 0:
            problems.append(f"repetition_penalty must be > 0, not {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                problems.append(f"{name} must be in [-2, 2], not {getattr(self, name)}")
        if not 0.0 <= self.min_p <= 1.0:
            problems.append(f"min_p must be in [0, 1], not {self.min_p}")
        if self.logprobs is not None and (isinstance(self.logprobs, bool) or not 0 <= self.logprobs <= 20):
            problems.append(f"logprobs (top alternatives) must be 0..20, not {self.logprobs!r}")
        if self.response_format is not None:
            from models.engines.structured import check_response_format

            if (problem := check_response_format(self.response_format)) is not None:
                problems.append(f"response_format: {problem}")
        for tid, bias in (self.logit_bias or {}).items():
            if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
                problems.append(f"logit_bias keys must be token ids (integers >= 0), not {tid!r}")
            elif not -100 <= float(bias) <= 100:
                problems.append(f"logit_bias[{tid}] must be in [-100, 100], not {bias}")
        if problems:
            raise GenerationInputError("; ".join(problems))


@dataclass
class GenerationStats:
    """Timings and counts of the last generation (read by the monitor)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_token_s: float | None = None
    total_s: float = 0.0
    finish_reason: str = "length"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float | None:
        if not self.completion_tokens or self.total_s <= 0:
            return None
        return self.completion_tokens / self.total_s


class PerThread:
    """An attribute each thread sees as it last set it (a thread that set none sees the value
    any thread set last, so single-threaded code reads what it wrote): what a call leaves behind
    (`last_stats`, `last_response`) stays the caller's when calls overlap in a server."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        local = obj.__dict__.get("_per_thread")
        if local is not None and hasattr(local, self.name):
            return getattr(local, self.name)
        try:
            return obj.__dict__[f"_last_{self.name}"]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj: Any, value: Any) -> None:
        local = obj.__dict__.get("_per_thread")
        if local is None:
            local = obj.__dict__.setdefault("_per_thread", threading.local())
        setattr(local, self.name, value)
        obj.__dict__[f"_last_{self.name}"] = value


class Engine(ABC):
    """A text generator. One generation at a time per instance, except where a local engine
    batches (`FastEngine.enable_batching`); `last_stats` is per thread."""

    name: str = "engine"
    last_stats = PerThread()

    def __init__(self) -> None:
        self.last_stats = GenerationStats()
        self.lock = threading.RLock()

    @abstractmethod
    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        """Yield the continuation of `prompt` as text pieces, as they decode."""

    @abstractmethod
    def stream_chat(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> Iterator[str]:
        """Yield the assistant's reply to `messages` (OpenAI-style role/content dicts)."""

    @abstractmethod
    def score(self, texts: Sequence[str]) -> list[float]:
        """Total natural-log likelihood of each text (first token conditioned on nothing/BOS)."""

    def sample_many(self, prompt: str | Sequence[dict[str, str]], params: SamplingParams, n: int) -> list[Candidate]:
        """n continuations of `prompt` (plain text) or replies to `prompt` (chat messages), row i
        sampled with seed `row_seeds(params, n)[i]`. This fallback decodes them one by one."""
        check_rows(n)
        out = []
        for seed in row_seeds(params, n):
            p = params.but(seed=seed)
            pieces = self.stream(prompt, p) if isinstance(prompt, str) else self.stream_chat(prompt, p)
            text = "".join(pieces)
            stats = self.last_stats
            out.append(Candidate(text, stats.completion_tokens, stats.finish_reason))
        return out

    def count_tokens(self, text: str) -> int:
        """Approximate token count (local engines are exact)."""
        return max(1, len(text) // 4)

    @property
    def context_length(self) -> int:
        return 4096

    def info(self) -> dict[str, Any]:
        return {"engine": self.name}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, memory)."""


#: How many other requests wait for the engine in a queue the engine does not own: a server's
#: fair lock sets it for the turn it lets through (`companion.server.generation.Runner`), and
#: `LocalEngine.hold_if_free` counts them as the engine being busy.
QUEUED: contextvars.ContextVar[Callable[[], int] | None] = contextvars.ContextVar("queued", default=None)


class LocalEngine(Engine):
    """An engine with weights in this process: shared decode loop over three primitives."""

    #: Whether `sample_many` decodes its n candidates together, in one batch (the fast engine),
    #: rather than one after another (this class's fallback, llama.cpp's and transformers'
    #: engines here): a small model's default best of N is worth its cost only then.
    decodes_together: bool = False

    def __init__(self, codec: TextCodec, max_positions: int) -> None:
        super().__init__()
        self.codec = codec
        self.max_positions = max_positions

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """What this engine's own arithmetic runs under: inference mode here; the fast engine adds
        its intra-op thread count, so that picking and scoring run at the count decoding does."""
        return torch.inference_mode()

    def hold_if_free(self) -> bool:
        """Take the engine for this thread if nothing else is decoding on it: True when the
        caller now holds `lock` (and releases it), False at once when another thread holds it,
        a continuous-batching scheduler (`scheduler`, where the engine has one) has requests in
        flight, or a server's fair queue (`QUEUED`) has requests waiting. Deciding and taking in
        one step lets one stream of many take the free engine for its best of N
        (`models.personality.choice.claim_engine`) while the rest share the scheduler's steps."""
        queued = QUEUED.get()
        if queued is not None and queued():
            return False
        if not self.lock.acquire(blocking=False):
            return False
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and scheduler.in_flight:
            self.lock.release()
            return False
        return True

    # --- primitives ---------------------------------------------------------------------

    @abstractmethod
    def prefill(self, ids: list[int]) -> torch.Tensor:
        """Reset the cache, run the prompt, return the last position's logits (vocab,)."""

    @abstractmethod
    def step(self, token: int) -> torch.Tensor:
        """Feed one token after the cached ones; return its logits (vocab,)."""

    @abstractmethod
    def forward_full(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits for every position of a (B, T) batch, no cache: (B, T, vocab)."""

    # --- shared behaviour ----------------------------------------------------------------

    @property
    def context_length(self) -> int:
        return self.max_positions

    def count_tokens(self, text: str) -> int:
        return self.codec.count(text)

    def stream(self, prompt: str, params: SamplingParams) -> Iterator[str]:
        # Plain text has no turns: chat markup (role, turn-end, emotion tokens) is never sampled,
        # so a continuation ends only at the end-of-text token or the length limit.
        ids = self.codec.encode(prompt, add_bos=True)
        return self.stream_ids(ids, params, suppress=self.codec.chat_control_ids)

    def stream_chat(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> Iterator[str]:
        ids = self.codec.encode(self.chat_text(messages, params), add_bos=True)
        return self.stream_ids(ids, params)

    def chat_text(self, messages: Sequence[dict[str, str]], params: SamplingParams) -> str:
        """The prompt text of a chat: the template with the answer's turn opened, or with
        `continue_final` and an assistant message last, that answer so far."""
        extra: dict[str, Any] = {"emotion": params.emotion}
        if params.tools:
            from models.engines.tools import supports_tools, template_messages, tool_specs
            from models.errors import GenerationInputError

            if not supports_tools(self.codec):
                raise GenerationInputError("tools: this model's chat template has no tool format")
            tool_specs(params.tools)  # each tool checked before the template sees it
            extra["tools"] = list(params.tools)
            messages = template_messages(messages)
        if params.continue_final and messages and messages[-1].get("role") == "assistant":
            head = self.codec.render_chat(messages[:-1], add_generation_prompt=True, **extra)
            return head + str(messages[-1].get("content") or "")
        return self.codec.render_chat(messages, add_generation_prompt=True, **extra)

    def stream_ids(self, ids: list[int], params: SamplingParams, suppress: torch.Tensor | None = None) -> Iterator[str]:
        """The decode loop: prefill, then sample/step until a stop condition. Token ids in
        `suppress` are never sampled."""
        params.check()
        with self.lock:
            yield from self._decode(ids, params, suppress)

    def begin(self, ids: list[int], params: SamplingParams) -> tuple[GenerationStats, list[int], int, float]:
        """Start a generation's record (`last_stats`): the prompt fitted to the context, how many
        tokens may follow it, and the start time. `max_new <= 0` means nothing can be generated."""
        stats = GenerationStats()
        self.last_stats = stats
        t0 = time.perf_counter()
        ids = self.fit_prompt(ids, params, stats)
        stats.prompt_tokens = len(ids)
        max_new = min(params.max_new_tokens, self.max_positions - len(ids))
        if max_new <= 0:
            stats.total_s = time.perf_counter() - t0
        return stats, ids, max_new, t0

    def _decode(self, ids: list[int], params: SamplingParams, suppress: torch.Tensor | None = None) -> Iterator[str]:
        stats, ids, max_new, t0 = self.begin(ids, params)
        if max_new <= 0:
            return
        row = DecodeRow(self.codec, ids, params, max_new)
        try:
            logits = self.prefill(ids)
            while True:
                if suppress is not None and len(suppress):
                    logits = logits.index_fill(0, suppress, float("-inf"))
                seen = len(row.pieces)
                token = row.take(logits)
                stats.completion_tokens = row.tokens
                for piece in row.pieces[seen:]:
                    if stats.time_to_first_token_s is None:
                        stats.time_to_first_token_s = time.perf_counter() - t0
                    yield piece
                if row.done:
                    break
                logits = self.step(token)
            tail = row.tail()
            if tail:
                yield tail
        finally:
            stats.finish_reason = row.finish
            stats.total_s = time.perf_counter() - t0
            if row.token_logprobs is not None:
                stats.extra["logprobs"] = row.token_logprobs

    def fit_prompt(self, ids: list[int], params: SamplingParams, stats: GenerationStats) -> list[int]:
        """`ids`, or the end of an over-long prompt (BOS first if any) with room to generate."""
        budget = self.max_positions - 1
        if len(ids) > budget:
            keep = budget - min(params.max_new_tokens, budget // 2)
            head = len(self.codec.prefix_ids)
            tail = max(1, keep - head)
            ids = ids[:head] + ids[-tail:]
            stats.extra["prompt_truncated"] = True
        return ids

    def prompt_ids(
        self, prompt: str | Sequence[dict[str, str]], params: SamplingParams
    ) -> tuple[list[int], torch.Tensor | None]:
        """Token ids and suppressed ids for a prompt, as `stream` / `stream_chat` build them."""
        if isinstance(prompt, str):
            return self.codec.encode(prompt, add_bos=True), self.codec.chat_control_ids
        return self.codec.encode(self.chat_text(prompt, params), add_bos=True), None

    @torch.inference_mode()
    def score(self, texts: Sequence[str]) -> list[float]:
        with self.lock, self.scope():  # forward_full may grow the engine's own tables
            return self._score(texts)

    @torch.inference_mode()
    def reply_logprobs(
        self, messages: Sequence[dict[str, Any]], params: SamplingParams, replies: Sequence[tuple[str, bool]]
    ) -> list[float | None]:
        """Mean raw log-probability per token of each `(text, ended)` reply as the answer to
        `messages` (its end-of-turn token counted where it ended): what `Candidate.mean_logprob`
        measures while sampling, here teacher-forced, all replies in one batch. None for a reply
        with no tokens."""
        head = self.codec.encode(self.chat_text(messages, params), add_bos=True)
        end = self.codec.token_id("<|end|>")
        end = self.codec.eos_id if end is None else end
        rows = [self.codec.encode(text) + ([end] if ended and end is not None else []) for text, ended in replies]
        longest = max((len(r) for r in rows), default=0)
        width = min(self.max_positions, len(head) + longest)
        head = head[-max(1, width - longest) :]
        rows = [r[: width - len(head)] for r in rows]
        if not any(rows):
            return [None] * len(rows)
        pad = self.codec.pad_id or 0
        batch = torch.full((len(rows), width), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            batch[i, : len(head) + len(r)] = torch.tensor(head + r)
        out: list[float | None] = []
        with self.lock, self.scope():
            logits = self.forward_full(batch)
            logp = torch.log_softmax(logits[:, len(head) - 1 : -1].float(), dim=-1)
            for i, r in enumerate(rows):
                if not r:
                    out.append(None)
                    continue
                picked = logp[i, torch.arange(len(r)), torch.tensor(r)]
                out.append(float(picked.mean()))
        return out

    def _score(self, texts: Sequence[str]) -> list[float]:
        out = []
        for text in texts:
            ids = self.codec.encode(text, add_bos=True)[: self.max_positions]
            if len(ids) < 2:
                out.append(0.0)
                continue
            x = torch.tensor([ids])
            logp = torch.log_softmax(self.forward_full(x)[0, :-1].float(), dim=-1)
            out.append(float(logp.gather(1, x[0, 1:, None]).sum()))
        return out

    def info(self) -> dict[str, Any]:
        return {"engine": self.name, "context_length": self.max_positions, "vocab_size": self.codec.vocab_size}
