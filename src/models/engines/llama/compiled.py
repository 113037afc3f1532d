"""The continuous-batching scheduler's hot paths for plain float weights, compiled by TorchScript.

Eager PyTorch gives the GIL up and takes it back around each op; a decoding step is ~300 ops
and a prefill piece ~150. In a server, other threads hold the GIL in between (the event loop
writing every stream's pieces, requests being prepared), and the scheduler's thread waits on
them after each op. A TorchScript function runs all its ops in C++ and takes the GIL back once:
with one thread busy half the time in Python, a step of one row took 5.7 ms eager and 2.3 ms
compiled (docs/serving.md, "The GIL").

`_plain_step` and `_plain_prefill` are `block.step_rows` and `block.forward` (one row, a
chunk at `start`, last logits) op for op, for weights with no biases and no per-head norms
multiplied with `torch.mm` (float32, bfloat16): the same numbers bit for bit
(`tests/test_scheduler.py`). `_int8_step` is the step for packed int8 weights
(`quantized::linear_dynamic`; its prompts' prefill runs eager). Qwen's biases and norms run eager.
TorchScript is deprecated upstream but still ships; where it is missing or fails, the eager
code runs, so nothing depends on it.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import torch

from models.engines.llama.block import attend, forward
from models.engines.llama.cache import KVCache, RopeTable

__all__ = ["PlainStep", "compiled"]


def _rows_in(tokens: torch.Tensor, positions: torch.Tensor, embed: torch.Tensor, cos_t: torch.Tensor,
             sin_t: torch.Tensor, shared: torch.Tensor | None,
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:  # fmt: skip
    """A step's inputs: the rows' embeddings, their indexes, RoPE at their positions, the span
    attention reads and the mask past each row's position (from the shared segment's end on)."""
    b = tokens.size(0)
    span = int(positions.max()) + 1
    start = 0 if shared is None else shared.size(3)
    masked = (torch.arange(start, span).unsqueeze(0) > positions.unsqueeze(1)).view(b, 1, 1, span - start)
    cos, sin = cos_t[positions].unsqueeze(1), sin_t[positions].unsqueeze(1)
    return torch.embedding(embed, tokens), torch.arange(b), cos, sin, span, masked


def _attention(t: torch.Tensor, layer: torch.Tensor, i: int, rows: torch.Tensor, positions: torch.Tensor,
               cos: torch.Tensor, sin: torch.Tensor, span: int, masked: torch.Tensor, shared: torch.Tensor | None,
               heads: int, kvh: int, d: int) -> torch.Tensor:  # fmt: skip
    """One layer's attention from its fused q/k/v product `t`: RoPE on q and k, the rows' k and
    v written at their positions, then `block.attend` (over layer `i` of the shared segment)."""
    b = t.size(0)
    nq, nkv = heads * d, kvh * d
    qk = t[:, : nq + nkv].view(b, heads + kvh, 2, d // 2)
    swapped = qk.flip(2)
    qk.mul_(cos).addcmul_(swapped, sin)
    layer.index_put_([None, rows, None, positions], t[:, nq:].view(b, 2, kvh, d))
    segment: torch.Tensor | None = None
    if shared is not None:
        segment = shared[i]
    return attend(t[:, :nq].view(b, kvh, heads // kvh, d), layer, span, masked, segment)


def _plain_step(tokens: torch.Tensor, positions: torch.Tensor, embed: torch.Tensor, qkv: list[torch.Tensor],
                o: list[torch.Tensor], gate_up: list[torch.Tensor], down: list[torch.Tensor],
                head_norm: torch.Tensor | None, head: torch.Tensor, cache: torch.Tensor, cos_t: torch.Tensor,
                sin_t: torch.Tensor, heads: int, kvh: int, d: int, inter: int, eps: float,
                shared: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """One token per row at its own position over the cache's first rows: `step_rows`."""
    h = embed.size(1)
    x, rows, cos, sin, span, masked = _rows_in(tokens, positions, embed, cos_t, sin_t, shared)
    for i in range(len(qkv)):
        t = torch.mm(torch.rms_norm(x, [h], None, eps), qkv[i])
        att = _attention(t, cache[i], i, rows, positions, cos, sin, span, masked, shared, heads, kvh, d)
        x = torch.mm(att, o[i]).add_(x)
        gu = torch.mm(torch.rms_norm(x, [h], None, eps), gate_up[i])
        x = torch.mm(torch.nn.functional.silu(gu[:, :inter]).mul_(gu[:, inter:]), down[i]).add_(x)
    return torch.mm(torch.rms_norm(x, [h], head_norm, eps), head)


def _int8_step(tokens: torch.Tensor, positions: torch.Tensor, embed: torch.Tensor,
               qkv: list[torch.classes.quantized.LinearPackedParamsBase],
               o: list[torch.classes.quantized.LinearPackedParamsBase],
               gate_up: list[torch.classes.quantized.LinearPackedParamsBase],
               down: list[torch.classes.quantized.LinearPackedParamsBase], head_norm: torch.Tensor | None,
               head: torch.classes.quantized.LinearPackedParamsBase, cache: torch.Tensor, cos_t: torch.Tensor,
               sin_t: torch.Tensor, heads: int, kvh: int, d: int, inter: int, eps: float,
               shared: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`_plain_step` for packed int8 weights: `torch.mm` is `quantized::linear_dynamic`, as
    `step_rows` multiplies them (the same numbers: `tests/test_scheduler.py`). TorchScript takes
    no function as an argument, so the product cannot be a parameter of one step."""
    h = embed.size(1)
    lin = torch.ops.quantized.linear_dynamic
    x, rows, cos, sin, span, masked = _rows_in(tokens, positions, embed, cos_t, sin_t, shared)
    for i in range(len(qkv)):
        t = lin(torch.rms_norm(x, [h], None, eps), qkv[i])
        att = _attention(t, cache[i], i, rows, positions, cos, sin, span, masked, shared, heads, kvh, d)
        x = lin(att, o[i]).add_(x)
        gu = lin(torch.rms_norm(x, [h], None, eps), gate_up[i])
        x = lin(torch.nn.functional.silu(gu[:, :inter]).mul_(gu[:, inter:]), down[i]).add_(x)
    return lin(torch.rms_norm(x, [h], head_norm, eps), head)


def _plain_prefill(ids: torch.Tensor, start: int, embed: torch.Tensor, qkv: list[torch.Tensor],
                   o: list[torch.Tensor], gate_up: list[torch.Tensor], down: list[torch.Tensor],
                   head_norm: torch.Tensor | None, head: torch.Tensor, cache: torch.Tensor,
                   cos_t: torch.Tensor, sin_t: torch.Tensor, heads: int, kvh: int, d: int, inter: int,
                   eps: float, logits: bool = True) -> torch.Tensor:  # fmt: skip
    """A (1, t) chunk of one row's prompt at `start..start+t` into its cache; the last token's
    logits (1, 1, vocab): `block.forward(..., start=start, last_only=True, logits=logits)`."""
    t = ids.size(1)
    h = embed.size(1)
    nq, nkv, group = heads * d, kvh * d, heads // kvh
    cos, sin = cos_t[start : start + t].unsqueeze(1), sin_t[start : start + t].unsqueeze(1)
    x = torch.embedding(embed, ids).view(t, h)
    for i in range(len(qkv)):
        y = torch.mm(torch.rms_norm(x, [h], None, eps), qkv[i]).view(1, t, -1)
        qk = y[:, :, : nq + nkv].view(1, t, heads + kvh, 2, d // 2)
        swapped = qk.flip(3)
        qk.mul_(cos).addcmul_(swapped, sin)
        layer = cache[i]
        layer[:, :, :, start : start + t].copy_(y[:, :, nq:].view(1, t, 2, kvh, d).permute(2, 0, 3, 1, 4))
        k, v = layer[0, :, :, : start + t], layer[1, :, :, : start + t]
        if t == 1:  # as `forward`: grouped matmuls, no SDPA
            scores = torch.matmul(y[:, :, :nq].view(1, kvh, group, d), k.transpose(2, 3))
            att = torch.matmul(torch.softmax(scores, dim=-1), v).view(1, nq)
        else:
            q = y[:, :, :nq].view(1, t, heads, d).transpose(1, 2)
            if group > 1:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            if start == 0:
                att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
            else:
                mask = torch.arange(start + t).unsqueeze(0) <= (torch.arange(t).unsqueeze(1) + start)
                att = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
            att = att.transpose(1, 2).reshape(t, nq)
        x = torch.mm(att, o[i]).add_(x)
        gu = torch.mm(torch.rms_norm(x, [h], None, eps), gate_up[i])
        x = torch.mm(torch.nn.functional.silu(gu[:, :inter]).mul_(gu[:, inter:]), down[i]).add_(x)
    if not logits:
        return x.new_empty(0)
    last = x[t - 1 :]
    return torch.mm(torch.rms_norm(last, [h], head_norm, eps), head).view(1, 1, -1)


_COMPILED: dict[str, Any] = {}  # name → the compiled function, or None where TorchScript is missing or fails
_COMPILING = threading.Lock()


def compiled(fn: Any) -> Any:
    """`fn` compiled by TorchScript, once per process, or None (the caller runs its eager code)."""
    with _COMPILING:
        if fn.__name__ not in _COMPILED:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    _COMPILED[fn.__name__] = torch.jit.script(fn)
            except Exception:  # no TorchScript in this build of torch: the eager code
                _COMPILED[fn.__name__] = None
        return _COMPILED[fn.__name__]


class PlainStep:
    """The compiled step and prefill bound to one set of plain float or int8 weights (int8: the
    step only); `for_weights` gives None for weights that need the eager code (biases, per-head
    norms)."""

    def __init__(self, step: Any, prefill: Any, w: Any, spec: Any) -> None:
        self.step_fn, self.prefill_fn, self.weights, self.spec = step, prefill, w, spec
        layers = w.layers
        self.lists = ([lw.qkv for lw in layers], [lw.o for lw in layers], [lw.gate_up for lw in layers],
                      [lw.down for lw in layers])  # fmt: skip
        self.shape = (spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.intermediate_size, spec.rms_norm_eps)

    @classmethod
    def for_weights(cls, w: Any, spec: Any) -> PlainStep | None:
        if any(v is not None for lw in w.layers for v in lw.extras()):
            return None
        if w.format == "int8-dynamic":  # the step compiled; a prompt's prefill runs eager (`forward`)
            step = compiled(_int8_step)
            return cls(step, None, w, spec) if step is not None else None
        if w.format not in ("float32", "bfloat16") or w.mm is not torch.mm:  # oneDNN's bfloat16: eager
            return None
        step, prefill = compiled(_plain_step), compiled(_plain_prefill)
        return cls(step, prefill, w, spec) if step is not None and prefill is not None else None

    def __call__(self, rope: RopeTable, tokens: torch.Tensor, cache: KVCache, positions: torch.Tensor,
                 shared: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """`step_rows(w, spec, rope, tokens, cache, positions, shared)`."""
        w = self.weights
        return self.step_fn(tokens, positions, w.embed, *self.lists, w.head_norm, w.head, cache.data, rope.cos,
                            rope.sin, *self.shape, shared)  # fmt: skip

    def prefill(
        self, rope: RopeTable, ids: torch.Tensor, cache: KVCache, start: int, logits: bool = True
    ) -> torch.Tensor:
        """`block.forward(w, spec, rope, ids, cache, start=start, last_only=True, logits=logits)` for one row."""
        w = self.weights
        if self.prefill_fn is None:
            return forward(w, self.spec, rope, ids, cache, start=start, last_only=True, logits=logits)
        return self.prefill_fn(ids, start, w.embed, *self.lists, w.head_norm, w.head, cache.data, rope.cos,
                               rope.sin, *self.shape, logits)  # fmt: skip
