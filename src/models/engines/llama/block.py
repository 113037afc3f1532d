"""The Llama decoder block, once, for any number of rows and tokens; the batched step; and the
batch-1 step.

`forward` runs `t` tokens of `b` rows from position `start` through every block: prefill
(`start=0`, one row), scoring (many rows, no cache), a batched decode step (`t=1`, many rows)
and a chunked prefill (`start>0`) are all this one function. With a cache it writes each
layer's K and V at `start..start+t` and attends over `0..start+t`; without one, over its own
tokens. Residual adds ride on the matmul's output; the weights' `mm` is `torch.mm` or the int8
kernel, so the same code runs every format.

`OneRowStep` is the one special case, kept because it measurably pays (`python -m bench
decode` and a 200-token step loop on the 2-core reference machine: the general block at one
row decodes int8 at ~0.75× and fp32 at ~0.9× of it): one token of one row, where dispatch
overhead dominates. The norm's scale is one Python float (for float weights passed as
`addmm`'s `alpha`, instead of ~8 ops), per-layer cache views are unpacked once, and attention
is `bmm` → `softmax` → `bmm` on the cache slice (GQA by viewing Q as kv_heads × group).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from models.engines.llama.cache import KVCache, RopeTable
from models.engines.llama.numpy_row import NumpyRowStep
from models.engines.llama.spec import LlamaSpec
from models.engines.llama.weights import LayerWeights, Weights, onednn_bf16, onednn_mm

__all__ = ["OneRowStep", "attend", "forward", "shared_attention", "step_rows"]


def _causal_mask(t: int, start: int) -> torch.Tensor:
    """(t, start+t) booleans: token i of the chunk sees every position up to start+i."""
    return torch.arange(start + t)[None, :] <= (torch.arange(t)[:, None] + start)


def _head_norms(qkv: torch.Tensor, lw: LayerWeights, nq: int, nkv: int, d: int, eps: float) -> None:
    """RMSNorm over each head of Q and K in place (the last axis of `qkv` holds Q, K, V)."""
    q = qkv[..., :nq].unflatten(-1, (-1, d))
    k = qkv[..., nq : nq + nkv].unflatten(-1, (-1, d))
    q.copy_(F.rms_norm(q, (d,), lw.q_norm, eps))
    k.copy_(F.rms_norm(k, (d,), lw.k_norm, eps))


def forward(
    w: Weights,
    spec: LlamaSpec,
    rope: RopeTable,
    ids: torch.Tensor,
    cache: KVCache | None = None,
    start: int = 0,
    last_only: bool = False,
    logits: bool = True,
) -> torch.Tensor:
    """Logits (b, t or 1, vocab) for a (b, t) batch of token ids at positions start..start+t;
    with `logits=False` only the cache is filled (an empty tensor comes back: no head)."""
    b, t = ids.shape
    h, d, inter, mm = spec.hidden_size, spec.head_dim, spec.intermediate_size, w.mm
    hidden, eps = (h,), spec.rms_norm_eps
    heads, kvh = spec.num_heads, spec.num_kv_heads
    nq, nkv, group = heads * d, kvh * d, heads // kvh
    pairs = (b, t, heads + kvh, 2, d // 2)
    cos, sin = rope.cos[start : start + t, None], rope.sin[start : start + t, None]
    mask = None if start == 0 or t == 1 else _causal_mask(t, start)
    x = F.embedding(ids, w.embed).view(b * t, h)
    for i, lw in enumerate(w.layers):
        qkv = mm(F.rms_norm(x, hidden, None, eps), lw.qkv)
        if lw.qkv_bias is not None:
            qkv.add_(lw.qkv_bias)
        qkv = qkv.view(b, t, -1)
        if lw.q_norm is not None:  # per-head norms before RoPE (Qwen3)
            _head_norms(qkv, lw, nq, nkv, d, eps)
        qk = qkv[..., : nq + nkv].view(pairs)
        swapped = qk.flip(3)
        qk.mul_(cos).addcmul_(swapped, sin)
        new_kv = qkv[..., nq:].view(b, t, 2, kvh, d).permute(2, 0, 3, 1, 4)  # (2, b, kvh, t, d)
        k, v = new_kv
        if cache is not None:
            layer = cache.data[i]
            layer[:, :, :, start : start + t].copy_(new_kv)
            k, v = layer[0, :, :, : start + t], layer[1, :, :, : start + t]
        if t == 1:  # one query per row: grouped matmuls over the cache, no SDPA set-up
            scores = torch.matmul(qkv[..., :nq].view(b, kvh, group, d), k.transpose(2, 3))
            att = torch.matmul(torch.softmax(scores, dim=-1), v).view(b, nq)
        else:
            q = qkv[..., :nq].view(b, t, heads, d).transpose(1, 2)
            if group > 1:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=1.0)
            att = att.transpose(1, 2).reshape(b * t, nq)
        x = mm(att, lw.o).add_(x)
        if lw.o_bias is not None:
            x.add_(lw.o_bias)
        gate_up = mm(F.rms_norm(x, hidden, None, eps), lw.gate_up)
        x = mm(F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), lw.down).add_(x)
    if not logits:
        return x.new_empty(0)
    x = x.view(b, t, h)
    if last_only:
        x = x[:, -1:]
    tt = x.shape[1]
    return mm(F.rms_norm(x, hidden, w.head_norm, eps).reshape(b * tt, h), w.head).view(b, tt, -1)


def shared_attention(q: torch.Tensor, layer: torch.Tensor, shared: torch.Tensor, span: int,
                     masked: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """One query per row, `q` (rows, kv_heads, group, d), over positions `0..span-1`, where the
    first `L = shared.size(2)` positions are the same for every row: their keys and values
    `shared` (2, kv_heads, L, d) are read once for the batch instead of once per row (FlashInfer's
    cascade attention; the rows' prompts start with the same card). The positions from `L` on
    are each row's own, in `layer` (2, rows, kv_heads, capacity, d); `masked` (rows, 1, 1,
    span - L) hides those past a row's position. One softmax over both parts: the same
    attention as over each row's whole cache, summed in two parts. (rows, kv_heads, group, d)."""
    b, kvh, group, d = q.size(0), q.size(1), q.size(2), q.size(3)
    n = shared.size(2)
    own = torch.matmul(q, layer[0, :b, :, n:span].transpose(2, 3))
    own.masked_fill_(masked, float("-inf"))
    by_head = q.permute(1, 0, 2, 3).reshape(kvh, b * group, d)
    common = torch.bmm(by_head, shared[0].transpose(1, 2)).view(kvh, b, group, n).permute(1, 0, 2, 3)
    p = torch.softmax(torch.cat([common, own], dim=-1), dim=-1)
    first = torch.bmm(p[..., :n].permute(1, 0, 2, 3).reshape(kvh, b * group, n), shared[1])
    return first.view(kvh, b, group, d).permute(1, 0, 2, 3) + torch.matmul(p[..., n:], layer[1, :b, :, n:span])


def attend(q: torch.Tensor, layer: torch.Tensor, span: int, masked: torch.Tensor,
           shared: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """One query per row, `q` (rows, kv_heads, group, d), over each row's positions below
    `span` in `layer` (2, rows, kv_heads, capacity, d), or over `shared` and then its own
    (`shared_attention`); `masked` hides the positions past each row's own. (rows, heads * d)."""
    b = q.size(0)
    if shared is not None:
        return shared_attention(q, layer, shared, span, masked).reshape(b, -1)
    scores = torch.matmul(q, layer[0, :b, :, :span].transpose(2, 3))
    scores.masked_fill_(masked, float("-inf"))
    return torch.matmul(torch.softmax(scores, dim=-1), layer[1, :b, :, :span]).reshape(b, -1)


def step_rows(w: Weights, spec: LlamaSpec, rope: RopeTable, tokens: torch.Tensor, cache: KVCache,
              positions: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """One token per row, each at its own position: writes the rows' K/V there and attends over
    each row's own prefix. The rows are the cache's first `len(tokens)`; it may hold more (free
    slots, rows that wait this step). Logits (rows, vocab). The weights are the engine's
    (`block.forward` conventions: norms folded, Q pre-scaled). With `shared` (layers, 2,
    kv_heads, L, d), every row's first L positions hold these keys and values, and attention
    reads them once for all rows (`shared_attention`)."""
    b = tokens.shape[0]
    h, d, inter, mm, eps = spec.hidden_size, spec.head_dim, spec.intermediate_size, w.mm, spec.rms_norm_eps
    heads, kvh = spec.num_heads, spec.num_kv_heads
    nq, nkv, group = heads * d, kvh * d, heads // kvh
    hidden = (h,)
    rows = torch.arange(b)
    cos, sin = rope.cos[positions][:, None], rope.sin[positions][:, None]  # (b, 1, 2, d/2)
    span = int(positions.max()) + 1
    start = 0 if shared is None else shared.shape[3]
    masked = (torch.arange(start, span)[None, :] > positions[:, None])[:, None, None, :]  # (b, 1, 1, span - start)
    x = F.embedding(tokens, w.embed)
    for i, lw in enumerate(w.layers):
        qkv = mm(F.rms_norm(x, hidden, None, eps), lw.qkv)
        if lw.qkv_bias is not None:
            qkv.add_(lw.qkv_bias)
        if lw.q_norm is not None:
            _head_norms(qkv, lw, nq, nkv, d, eps)
        qk = qkv[:, : nq + nkv].view(b, heads + kvh, 2, d // 2)
        swapped = qk.flip(2)
        qk.mul_(cos).addcmul_(swapped, sin)
        layer = cache.data[i]  # (2, rows, kvh, capacity, d)
        layer[:, rows, :, positions] = qkv[:, nq:].view(b, 2, kvh, d)
        att = attend(qkv[:, :nq].view(b, kvh, group, d), layer, span, masked, None if shared is None else shared[i])
        x = mm(att, lw.o).add_(x)
        if lw.o_bias is not None:
            x.add_(lw.o_bias)
        gate_up = mm(F.rms_norm(x, hidden, None, eps), lw.gate_up)
        x = mm(F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), lw.down).add_(x)
    return mm(F.rms_norm(x, hidden, w.head_norm, eps), w.head)


class OneRowStep:
    """One token of row 0 against the cache: the per-token hot path, for every weight format.

    Float weights fold the norm's scale into `addmm`'s `alpha` and the residual into its input;
    oneDNN's packed bfloat16 weights scale the activation's product and add the residual after
    the kernel; float32 weights run the whole step in NumPy where NumPy has OpenBLAS
    (`numpy_row.NumpyRowStep`; `blas.py`: MKL runs one row on one thread); int8 weights take
    the scheduler's compiled step (`compiled._int8_step`) on the one row, eager only where
    TorchScript is missing. Built for one (weights, cache tensor, RoPE table) triple; the engine
    builds a new one when any of them changes (a cache that grows, weights in another format)."""

    def __init__(self, w: Weights, spec: LlamaSpec, cache: KVCache, rope: RopeTable) -> None:
        if cache.rows != 1:
            raise ValueError("OneRowStep runs on a one-row cache")
        d, kvh = spec.head_dim, spec.num_kv_heads
        nq, nkv = spec.num_heads * d, kvh * d
        self.eps, self.inv_h, self.inter = spec.rms_norm_eps, 1.0 / spec.hidden_size, spec.intermediate_size
        self.nq, self.qk_end, self.rot = nq, nq + nkv, nq + 2 * nkv
        self.pairs = (spec.num_heads + kvh, 2, d // 2)
        self.q_shape, self.kv_shape = (kvh, spec.num_heads // kvh, d), (2, kvh, d)
        self.embed, self.head, self.head_norm, self.rope = w.embed, w.head, w.head_norm, rope
        # float32 on OpenBLAS: the whole step in NumPy (a microsecond an op instead of several)
        self.numpy_step = NumpyRowStep(w, spec, cache, rope) if NumpyRowStep.fits(w) else None
        # int8: the scheduler's compiled step on this one row (one call into TorchScript instead of
        # ~60 eager ops, each around a kernel of a few microseconds)
        self.compiled = self._compiled_int8(w, spec) if w.format == "int8-dynamic" else None
        self.cache = cache
        if w.format == "int8-dynamic":
            lin = torch.ops.quantized.linear_dynamic
            self.scaled = lambda x, m, scale: lin(x * scale, m)
            self.residual = lambda x, a, m: lin(a, m).add_(x)
        elif w.format == "bfloat16" and onednn_bf16():  # oneDNN's packed matrices (a tied head stays plain)
            self.scaled = lambda x, m, scale: onednn_mm(x, m).mul_(scale)
            self.residual = lambda x, a, m: onednn_mm(a, m).add_(x)
        else:
            addmm, zero = torch.addmm, torch.zeros(1, dtype=w.dtype)  # addmm's ignored input (beta=0)
            self.scaled = lambda x, m, scale: addmm(zero, x, m, beta=0, alpha=scale)
            self.residual = addmm
        # What the step reads per layer, unpacked once: weights, cache, K^T and V views.
        self.plan = []
        for lw, layer in zip(w.layers, cache.data[:, :, 0], strict=True):
            self.plan.append((*lw.each(), layer, layer[0].transpose(1, 2), layer[1], lw))
        self.plain = all(v is None for lw in w.layers for v in lw.extras())  # Llama: no biases, no head norms
        self.head_dim = d

    @staticmethod
    def _compiled_int8(w: Weights, spec: LlamaSpec) -> Any:
        from models.engines.llama.compiled import PlainStep

        return PlainStep.for_weights(w, spec)

    def __call__(self, token: int, pos: int) -> torch.Tensor:
        if self.compiled is not None:
            rows = torch.tensor([token])
            return self.compiled(self.rope, rows, self.cache, torch.tensor([pos]))[0]
        if self.numpy_step is not None:
            return self.numpy_step(token, pos)
        return self._step(token, pos)

    def _step(self, token: int, pos: int) -> torch.Tensor:
        eps, inv_h, inter, nq, qk_end, rot = self.eps, self.inv_h, self.inter, self.nq, self.qk_end, self.rot
        pairs, q_shape, kv_shape, n = self.pairs, self.q_shape, self.kv_shape, pos + 1
        scaled, residual = self.scaled, self.residual
        cos, sin = self.rope.cos[pos], self.rope.sin[pos]
        vector_norm, bmm, softmax, silu = torch.linalg.vector_norm, torch.bmm, torch.softmax, F.silu
        x = self.embed[token : token + 1]
        plain, d = self.plain, self.head_dim
        for w_qkv, w_o, w_gate_up, w_down, kv, keys_t, values, lw in self.plan:
            qkv = scaled(x, w_qkv, 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)).view(-1)
            if not plain:
                if lw.qkv_bias is not None:
                    qkv.add_(lw.qkv_bias)
                if lw.q_norm is not None:
                    _head_norms(qkv, lw, nq, qk_end - nq, d, eps)
            qk = qkv[:qk_end].view(pairs)
            swapped = qk.flip(1)
            qk.mul_(cos).addcmul_(swapped, sin)
            kv.select(2, pos).copy_(qkv[nq:rot].view(kv_shape))
            scores = bmm(qkv[:nq].view(q_shape), keys_t.narrow(2, 0, n))
            att = bmm(softmax(scores, dim=-1), values.narrow(1, 0, n))
            x = residual(x, att.view(1, nq), w_o)
            if not plain and lw.o_bias is not None:
                x.add_(lw.o_bias)
            gate_up = scaled(x, w_gate_up, 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps))
            x = residual(x, silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), w_down)
        scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
        if self.head_norm is not None:
            x = x * self.head_norm
        return scaled(x, self.head, scale).view(-1)
