"""Runtime settings of an optimized model version, applied to the `fast` engine at load.

`ModelOptimizer` publishes a winner as a new version whose `companion.json` carries a
`runtime` section, e.g. `{"quantization": "int8-dynamic", "threads": 1}`. The weights on disk
stay the original Hugging Face safetensors (so `hf` still loads the folder unchanged); the
`fast` engine applies the section right after loading (`apply_runtime`):

* `quantization: int8-dynamic`: every fused matrix (QKV, O, gate-up, down, LM head) becomes a
  per-output-channel symmetric int8 matrix packed for FBGEMM, and the step multiplies with
  `quantized::linear_dynamic` (activations quantized per call, int32 accumulation, fp32 out).
  Decode streams ~4× fewer weight bytes per token; the embedding stays fp32 (a row lookup).
  The fp32 matrices are released.
* `dtype: bfloat16`: the fused matrices, cache and RoPE tables convert to bf16.
* `threads: N`: the engine's intra-op thread count (when the caller did not choose one).

Logits of an int8 engine differ from fp32 by quantization error; the optimizer measures what
that costs in held-out perplexity before it publishes anything.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from types import MethodType
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from models.errors import EngineError

if TYPE_CHECKING:
    from models.engines.fast import FastEngine

__all__ = ["QUANTIZATIONS", "apply_runtime", "int8_available", "quantize_int8", "read_runtime", "weight_bytes"]

QUANTIZATIONS = ("int8-dynamic",)
_KEYS = {"quantization", "dtype", "threads"}


def int8_available() -> bool:
    """Whether this torch build has the FBGEMM/x86 dynamic int8 linear kernels."""
    engines = torch.backends.quantized.supported_engines
    return any(e in engines for e in ("fbgemm", "x86")) and hasattr(torch.ops.quantized, "linear_dynamic")


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
    t = runtime.get("threads")
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 1):
        problems.append(f"threads {t!r} must be a positive integer")
    if problems:
        raise EngineError(f"{path}: runtime: " + "; ".join(problems))
    return runtime


def apply_runtime(engine: FastEngine, runtime: dict[str, Any], *, threads_chosen: bool = False) -> None:
    """Apply a (validated) runtime section to a freshly loaded engine."""
    if runtime.get("threads") and not threads_chosen:
        engine.threads = int(runtime["threads"])
    if runtime.get("dtype") == "bfloat16" and engine.dtype != torch.bfloat16:
        _to_dtype(engine, torch.bfloat16)
    if runtime.get("quantization") == "int8-dynamic":
        quantize_int8(engine)
    engine.runtime = dict(runtime)


def _to_dtype(engine: FastEngine, dtype: torch.dtype) -> None:
    engine._embed = engine._embed.to(dtype)
    engine._lm_head = engine._lm_head.to(dtype)
    for layer in engine._layers:
        layer.w_qkv, layer.w_o = layer.w_qkv.to(dtype), layer.w_o.to(dtype)
        layer.w_gate_up, layer.w_down = layer.w_gate_up.to(dtype), layer.w_down.to(dtype)
    engine._zero = torch.zeros(1, dtype=dtype)
    engine.dtype = dtype
    capacity = engine._capacity
    engine._capacity = 0
    engine._ensure_capacity(capacity)


def _pack(w_in_out: torch.Tensor) -> tuple[Any, int]:
    """(in, out) fp32 → FBGEMM-packed per-output-channel symmetric int8; and its byte count."""
    w = w_in_out.t().contiguous().float()  # (out, in)
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zeros = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensor types are deprecated in favour of torchao (NOTES.md)
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*", category=UserWarning)
        q = torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None), w.numel() + 4 * w.shape[0]


def quantize_int8(engine: FastEngine) -> None:
    """Turn `engine`'s matrices into packed int8 and switch its forward passes to them."""
    if not int8_available():
        raise EngineError("int8 quantization needs torch's FBGEMM/x86 quantized kernels, absent from this build")
    if engine.dtype != torch.float32:
        raise EngineError("int8 quantization starts from float32 weights")
    packed, nbytes = [], 0
    for layer in engine._layers:
        parts = []
        for attr in ("w_qkv", "w_o", "w_gate_up", "w_down"):
            p, n = _pack(getattr(layer, attr))
            parts.append(p)
            nbytes += n
            setattr(layer, attr, None)  # the fp32 copy is no longer used: release it
        packed.append(tuple(parts))
    engine._int8_layers = packed
    engine._int8_head, n = _pack(engine._lm_head)
    engine._int8_bytes = nbytes + n + engine._embed.numel() * engine._embed.element_size()
    engine._lm_head = None
    engine._step_logits = MethodType(_step_logits_int8, engine)  # `_forward_seq` reads `_matrices()`
    engine.quantization = "int8-dynamic"


def weight_bytes(engine: Any) -> int:
    """Bytes of weights the engine holds in memory (what decode streams, plus the embedding)."""
    if getattr(engine, "_int8_bytes", None):
        return int(engine._int8_bytes)
    if hasattr(engine, "_layers"):
        tensors = [engine._embed, engine._lm_head]
        for layer in engine._layers:
            tensors += [layer.w_qkv, layer.w_o, layer.w_gate_up, layer.w_down]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)
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


# --------------------------------------------------------------------------- forward passes


def _step_logits_int8(self: FastEngine, token: int, pos: int) -> torch.Tensor:
    """`FastEngine._step_logits` with int8 matrices (same structure; see fast.py's module doc).

    The per-token step stays specialized per format: the fp32 one folds the RMS-norm scale and
    the residual add into `addmm` calls, which the int8 kernel cannot take. Prefill and scoring
    share one pass for both (`FastEngine._forward_seq` over `_matrices()`)."""
    eps, inv_h, inter, nq, qk_end, rot, pairs, q_shape, kv_shape = self._dims
    n = pos + 1
    cos, sin = self._cos[pos], self._sin[pos]
    vector_norm, bmm, softmax, silu = torch.linalg.vector_norm, torch.bmm, torch.softmax, F.silu
    lin = torch.ops.quantized.linear_dynamic
    x = self._embed[token : token + 1]
    for (p_qkv, p_o, p_gate_up, p_down), plan in zip(self._int8_layers, self._plan, strict=True):
        kv, keys_t, values = plan[4], plan[5], plan[6]
        scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
        qkv = lin(x * scale, p_qkv).view(-1)
        qk = qkv[:qk_end].view(pairs)
        swapped = qk.flip(1)
        qk.mul_(cos).addcmul_(swapped, sin)
        kv.select(2, pos).copy_(qkv[nq:rot].view(kv_shape))
        scores = bmm(qkv[:nq].view(q_shape), keys_t.narrow(2, 0, n))
        att = bmm(softmax(scores, dim=-1), values.narrow(1, 0, n))
        x = lin(att.view(1, nq), p_o).add_(x)
        scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
        gate_up = lin(x * scale, p_gate_up)
        x = lin(silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), p_down).add_(x)
    scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
    return lin(x * scale, self._int8_head).view(-1)
