"""Runtime settings of an optimized model version, applied to the `fast` engine at load.

`ModelOptimizer` publishes a winner as a new version whose `companion.json` carries a
`runtime` section, e.g. `{"quantization": "int8-dynamic", "threads": 1}`. The weights on disk
stay the original Hugging Face safetensors (so `hf` still loads the folder unchanged); the
`fast` engine applies the section right after loading (`apply_runtime`), each change by
swapping in new `Weights` (`weights.py`):

* `quantization: int8-dynamic`: `Weights.quantized_int8` (the float matrices are released);
* `dtype: bfloat16`: `Weights.to_dtype`, and the cache and RoPE table follow;
* `threads: N`: the engine's intra-op thread count (when the caller did not choose one).
* `threads_batch: N`: its thread count for prompt processing (prefill; default `threads`).

Logits of an int8 engine differ from fp32 by quantization error; the optimizer measures what
that costs in held-out perplexity before it publishes anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from models.engines.llama.weights import int8_available
from models.errors import EngineError

if TYPE_CHECKING:
    from models.engines.llama.engine import FastEngine

__all__ = ["QUANTIZATIONS", "apply_runtime", "int8_available", "quantize_int8", "read_runtime", "weight_bytes"]

QUANTIZATIONS = ("int8-dynamic",)
_KEYS = {"quantization", "dtype", "threads", "threads_batch"}


def read_runtime(folder: str | Path) -> dict[str, Any]:
    """The `runtime` section of `folder/companion.json` ({} when none); EngineError if malformed."""
    path = Path(folder) / "companion.json"
    if not path.exists():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EngineError(f"{path}: not valid JSON ({exc})") from exc
    runtime = meta.get("runtime") if isinstance(meta, dict) else None
    if runtime is None:
        return {}
    problems = []
    if not isinstance(runtime, dict):
        raise EngineError(f"{path}: runtime must be an object, not {type(runtime).__name__}")
    unknown = set(runtime) - _KEYS
    if unknown:
        problems.append(f"unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_KEYS))})")
    q = runtime.get("quantization")
    if q is not None and q not in QUANTIZATIONS:
        problems.append(f"quantization {q!r} is not one of {', '.join(QUANTIZATIONS)}")
    d = runtime.get("dtype")
    if d is not None and d not in ("float32", "bfloat16"):
        problems.append(f"dtype {d!r} must be float32 or bfloat16")
    for key in ("threads", "threads_batch"):
        t = runtime.get(key)
        if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
            problems.append(f"{key} {t!r} must be a positive integer")
    if problems:
        raise EngineError(f"{path}: runtime: " + "; ".join(problems))
    return runtime


def apply_runtime(
    engine: FastEngine, runtime: dict[str, Any], *, threads_chosen: bool = False, threads_batch_chosen: bool = False
) -> None:
    """Apply a (validated) runtime section to a freshly loaded engine."""
    if runtime.get("threads") and not threads_chosen:
        engine.threads = int(runtime["threads"])
    if runtime.get("threads_batch") and not threads_batch_chosen:
        engine.threads_batch = int(runtime["threads_batch"])
    if runtime.get("dtype") == "bfloat16" and engine.dtype != torch.bfloat16:
        engine.use_weights(engine.weights.to_dtype(torch.bfloat16))
    if runtime.get("quantization") == "int8-dynamic":
        quantize_int8(engine)
    engine.runtime = dict(runtime)


def quantize_int8(engine: FastEngine) -> None:
    """Swap `engine`'s float32 weights for packed int8 ones (`Weights.quantized_int8`)."""
    engine.use_weights(engine.weights.quantized_int8())


def weight_bytes(engine: Any) -> int:
    """Bytes of weights the engine holds in memory (what decode streams, plus the embedding)."""
    weights = getattr(engine, "weights", None)
    if weights is not None:
        return int(weights.nbytes)
    model = getattr(engine, "model", None)
    if model is None:
        raise EngineError(f"cannot tell the weight size of engine {getattr(engine, 'name', engine)!r}")
    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):  # a dynamic-quantized Linear
            w = weight()
            total += w.numel() + 4 * w.shape[0]
            continue
        for p in module.parameters(recurse=False):
            total += p.numel() * p.element_size()
    return total
