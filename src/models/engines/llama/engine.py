"""The `fast` engine: a compact decoder for Llama-architecture weights, built for batch 1.

A 5 M-parameter model does ~10 MFLOP per token but reads ~21 MB of fp32 weights, so a decode
step costs one pass over memory plus per-operator dispatch overhead. The engine is the state
around the package's parts: `Weights` (fused matrices and their matmul, `weights.py`), a
`KVCache` and `RopeTable` (`cache.py`), one `forward` for every path and the batch-1
`OneRowStep` (`block.py`), runtime settings of an optimized version (`runtime.py`) and
best-of-N decoding (`batch.py`). Everything runs under `torch.inference_mode` with the
engine's thread count.

Reads `config.json` and `model.safetensors` (or a sharded index) itself, one tensor at a time
(`weights.TensorFiles`), without importing `transformers`: loading peaks at the fused weights
plus one layer, and bfloat16 weights stay bfloat16 with `dtype=None` (`dtype: auto`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from models.adapters import merge_lora
from models.engines.base import Candidate, LocalEngine, SamplingParams, check_rows
from models.engines.codec import TextCodec
from models.engines.llama.blas import numpy_blas
from models.engines.llama.block import OneRowStep, forward
from models.engines.llama.cache import KVCache, RopeTable
from models.engines.llama.compiled import PlainStep
from models.engines.llama.runtime import apply_runtime, read_runtime
from models.engines.llama.spec import LlamaSpec, unsupported
from models.engines.llama.weights import Weights, build_weights, load_tensors
from models.errors import EngineError, GenerationInputError

__all__ = ["DEFAULT_THREADS", "FastEngine", "ThreadScope"]

#: Intra-op threads when `threads=None`. Measured with `python -m bench decode` on the 2-core
#: reference machine: with another process busy (a training job), 2 threads decode ~40× slower
#: than 1 (each parallel op waits at a barrier for the descheduled thread), and the step is
#: bound by streaming ~21 MB of fp32 weights, which one core already does at DRAM speed.
DEFAULT_THREADS = 1
#: The KV cache starts at most this long and doubles on demand up to max_position_embeddings.
INITIAL_CAPACITY = 4096


class ThreadScope:
    """Inference mode plus an intra-op thread count, restored on exit. Nested scopes with
    the same count cost an integer compare (no `set_num_threads` call)."""

    __slots__ = ("_blas", "_mode", "_prev", "_prev_blas", "threads")

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._mode = torch.inference_mode()
        self._prev = self._prev_blas = 0
        self._blas = numpy_blas()  # NumPy's OpenBLAS, which the one-row step uses: the same count

    def __enter__(self) -> None:
        self._mode.__enter__()
        self._prev = torch.get_num_threads()
        if self._prev != self.threads:
            torch.set_num_threads(self.threads)
        if self._blas is not None:
            self._prev_blas = self._blas.get_num_threads()
            if self._prev_blas != self.threads:
                self._blas.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        if self._prev != self.threads:
            torch.set_num_threads(self._prev)
        if self._blas is not None and self._prev_blas != self.threads:
            self._blas.set_num_threads(self._prev_blas)
        self._mode.__exit__(*exc)


class FastEngine(LocalEngine):
    """Llama decoder with a static KV cache; its logits match the `hf` engine's.

    `threads=None` uses `DEFAULT_THREADS`. PyTorch's intra-op thread count is process-wide:
    each of the engine's calls sets its own and restores the previous value on return (a pair
    of `set_num_threads` calls costs ~4 µs), so nothing leaks into the caller's code between
    streamed pieces, and inference mode likewise.
    """

    name = "fast"

    def __init__(
        self,
        folder: str | Path,
        dtype: torch.dtype | None = torch.float32,
        threads: int | None = None,
        adapter: str | Path | None = None,
        threads_batch: int | None = None,
    ) -> None:
        folder = Path(folder)
        spec = LlamaSpec.read(folder)
        self.folder, self.spec = folder, spec
        for what, n in (("threads", threads), ("threads_batch", threads_batch)):
            if n is not None and n < 1:
                raise EngineError(f"{what} must be >= 1 (or None for the default), not {n}")
        self.threads = threads or DEFAULT_THREADS
        self._threads_batch = threads_batch
        super().__init__(TextCodec(folder), max_positions=spec.max_positions)
        self.runtime: dict[str, Any] = {}
        self.adapter: dict[str, Any] | None = None
        self._pos = 0
        self._held: list[int] = []  # the token ids the cache holds, position by position
        # Our thread count here too: on a busy machine, parallel copies wait for a stalled thread.
        with self.scope():
            tensors = load_tensors(folder)
            if dtype is None:  # auto: bfloat16 weights stay bfloat16 (half the memory), others float32
                dtype = torch.bfloat16 if tensors.stored_dtype() == torch.bfloat16 else torch.float32
            if adapter is not None:
                self.adapter = {"path": str(adapter), **merge_lora(tensors, Path(adapter))}
            self.parameters = tensors.numel()
            weights = build_weights(tensors, spec, dtype, folder)
            del tensors
            self.cache = KVCache(spec, 1, min(spec.max_positions, INITIAL_CAPACITY), dtype)
            self.rope = RopeTable(spec, self.cache.capacity, dtype)
            self.weights = weights
            self._one_row: OneRowStep
            self.use_weights(weights)
            # An optimized version's settings from companion.json (int8, bf16, threads).
            apply_runtime(
                self, read_runtime(folder), threads_chosen=threads is not None,
                threads_batch_chosen=threads_batch is not None,
            )  # fmt: skip

    @classmethod
    def supports(cls, folder: str | Path) -> bool:
        """Whether `folder` holds a Llama model this engine runs (reads the config only)."""
        folder = Path(folder)
        try:
            cfg = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            return False
        weights = ("model.safetensors", "model.safetensors.index.json")
        has_weights = any((folder / name).exists() for name in weights)
        return isinstance(cfg, dict) and has_weights and not unsupported(cfg)

    # --- state ---------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        return self.weights.dtype

    @property
    def quantization(self) -> str | None:
        return self.weights.format if self.weights.format == "int8-dynamic" else None

    def scope(self) -> ThreadScope:
        """Inference mode at this engine's thread count (what every call runs under)."""
        return ThreadScope(self.threads)

    @property
    def threads_batch(self) -> int:
        """Threads for prompt processing (llama.cpp's `--threads-batch`): a prompt's matrix
        products are compute-bound and scale with cores, where a decoding step is bound by reading
        the weights and one thread suffices. Defaults to `threads`, because a parallel op waits for
        every one of its threads and a busy machine stalls them (see `DEFAULT_THREADS`)."""
        return self._threads_batch or self.threads

    @threads_batch.setter
    def threads_batch(self, n: int | None) -> None:
        self._threads_batch = n

    def batch_scope(self) -> ThreadScope:
        """Inference mode at the prompt-processing thread count (`threads_batch`)."""
        return ThreadScope(self.threads_batch)

    def use_weights(self, weights: Weights) -> None:
        """Decode with `weights` from now on (a format change: bf16, int8); the cache and RoPE
        table follow their dtype, and the cached prompt is dropped."""
        with self.scope():
            if weights.dtype != self.cache.dtype:
                self.cache = KVCache(self.spec, 1, self.cache.capacity, weights.dtype)
                self.rope = RopeTable(self.spec, self.cache.capacity, weights.dtype)
            self.weights = weights
            self._pos = 0
            self._held = []
            self._plan()

    def _plan(self) -> None:
        self._one_row = OneRowStep(self.weights, self.spec, self.cache, self.rope)
        self._rows_step = PlainStep.for_weights(self.weights, self.spec)  # compiled, or None: eager

    def ensure_capacity(self, n: int) -> None:
        """Grow the KV cache and the RoPE table to hold `n` positions (doubling, data kept)."""
        if self.cache.grow(n):
            self.rope = RopeTable(self.spec, self.cache.capacity, self.dtype)
            self._plan()

    # --- primitives ----------------------------------------------------------------------

    def prefill(self, ids: list[int]) -> torch.Tensor:
        if not ids:
            raise GenerationInputError("cannot prefill an empty prompt: give at least one token")
        with self.batch_scope():
            self.ensure_capacity(len(ids))
            # The cache still holds the last prompt and what followed it: a prompt that starts the
            # same (a character's card, the earlier turns) computes only the rest, as llama.cpp's
            # server reuses a slot's cache. At least the last token is computed, for its logits.
            keep = _common_prefix(self._held, ids, len(ids) - 1)
            self._pos = keep
            tail = torch.tensor([ids[keep:]])
            logits = forward(self.weights, self.spec, self.rope, tail, self.cache, start=keep, last_only=True)
            self._pos = len(ids)
            self._held = list(ids)
            return logits[0, -1]

    def step(self, token: int) -> torch.Tensor:
        if not 0 <= token < self.spec.vocab_size:
            raise GenerationInputError(f"token id {token} is outside the vocabulary (0..{self.spec.vocab_size - 1})")
        with self.scope():
            if self._pos >= self.cache.capacity:
                self.ensure_capacity(self._pos + 1)
            logits = self._one_row(token, self._pos)
            del self._held[self._pos :]
            self._held.append(token)
            self._pos += 1
            return logits

    def forward_full(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise EngineError(f"forward_full takes a (batch, time) tensor, not {tuple(ids.shape)}")
        with self.scope():
            self.ensure_capacity(ids.shape[1])
            return forward(self.weights, self.spec, self.rope, ids)

    def forward_rows(self, tokens: Sequence[int], cache: KVCache, pos: int) -> torch.Tensor:
        """One token per row of `cache` at position `pos`; the rows' logits (rows, vocab)."""
        with self.scope():
            self.ensure_capacity(pos + 1)
            ids = torch.tensor(list(tokens), dtype=torch.long)
            if self._rows_step is not None:  # the scheduler's compiled step (the same numbers)
                return self._rows_step(self.rope, ids, cache, torch.full((len(ids),), pos, dtype=torch.long))
            return forward(self.weights, self.spec, self.rope, ids[:, None], cache, start=pos)[:, -1]

    def expand_cache(self, rows: int, capacity: int) -> KVCache:
        """`rows` copies of the prompt this engine last prefilled, room for `capacity` positions."""
        with self.scope():
            self.ensure_capacity(capacity)
            return self.cache.expand(rows, self._pos, capacity)

    # --- continuous batching ---------------------------------------------------------------

    scheduler: Any = None
    """A `Scheduler` once `enable_batching` ran: single decodes then share its batched steps."""

    def enable_batching(self, *, process: bool = False, **settings: Any) -> Any:
        """Decode every streamed generation through one continuous-batching `Scheduler` (a
        server does this): concurrent callers share each step instead of queueing. With
        `process`, the scheduler runs in a child process of its own (`engine_process`)."""
        if self.scheduler is None:
            if process:
                from models.engines.llama.engine_process import EngineProcess

                self.scheduler = EngineProcess(self, **settings)
            else:
                from models.engines.llama.scheduler import Scheduler

                self.scheduler = Scheduler(self, **settings)
        return self.scheduler

    def stream_ids(self, ids: list[int], params: SamplingParams, suppress: torch.Tensor | None = None) -> Iterator[str]:
        scheduler = self.scheduler
        if scheduler is None:
            yield from super().stream_ids(ids, params, suppress)
            return
        params.check()
        ticket = scheduler.submit(ids, params, suppress=suppress)
        self.last_stats = ticket.stats
        yield from ticket

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
            self.scheduler = None

    decodes_together = True  # `sample_many` below

    def sample_many(self, prompt: str | Sequence[dict[str, str]], params: SamplingParams, n: int) -> list[Candidate]:
        """`Engine.sample_many` with the n rows decoded together in batched steps."""
        from models.engines.llama.batch import decode_many

        check_rows(n)
        params.check()
        ids, suppress = self.prompt_ids(prompt, params)
        with self.lock:
            return decode_many(self, ids, params, n, suppress)

    # --- reporting -----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        extra = {
            "architecture": self.spec.architecture,
            "parameters": self.parameters,
            "threads": self.threads,
            "threads_batch": self.threads_batch,
        }
        if self.adapter:
            extra["adapter"] = self.adapter
        return super().info() | extra


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    """How many leading ids `a` and `b` share, at most `limit`."""
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
