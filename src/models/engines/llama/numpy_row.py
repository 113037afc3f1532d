"""One token of one row in NumPy: the float32 hot path of the fast engine's batch-1 decoding.

A step of the embedded model is about 75 small operations around 17 products. The products
take 0.84 ms at one thread when they read all 21 MB of weights in turn (0.25 ms for the
layers' 13 MB alone, which stay in the cache: `/work/runs/s18/l3.py`); in torch, the
operations around them took the step to 1.41 ms, because each eager op costs several
microseconds of dispatch and every product crossed between torch and NumPy. NumPy's own ufuncs
on arrays of a few hundred floats cost one or two microseconds: 1.14 ms a step
(`/work/runs/s18/nprow.py`). So for float32 weights on NumPy's OpenBLAS
(`blas.py`) the whole step runs in NumPy on views of the same memory: the weights, the
KV cache and the RoPE table. Nothing is copied at build time, and what the step writes into the
cache is what torch's step would write. torch's logits are a view of the result.

The arithmetic is `block.OneRowStep`'s, operation for operation: the norm's scale after the
product, RoPE by swapping the halves against a sign-folded sine table, attention per KV head
with Q viewed as its group, SiLU as `g * sigmoid(g)` (sigmoid through `tanh`, which cannot
overflow). Results agree with the torch step to float32 rounding (tests).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from models.engines.llama.blas import numpy_blas
from models.engines.llama.cache import KVCache, RopeTable
from models.engines.llama.spec import LlamaSpec
from models.engines.llama.weights import Weights

__all__ = ["NumpyRowStep"]


def _array(t: torch.Tensor | None) -> np.ndarray | None:
    return None if t is None else t.detach().numpy()


class NumpyRowStep:
    """One token of row 0 of the cache, float32 weights; `__call__(token, pos)` gives the
    logits as a tensor over the vocabulary. Built for one (weights, cache tensor, RoPE table)
    triple: the engine's one-row cache, or the scheduler's batch cache while one row runs (the
    live rows are its first ones)."""

    @staticmethod
    def fits(w: Weights) -> bool:
        """Whether these weights run here: float32 matrices, and NumPy multiplies with OpenBLAS."""
        return w.format != "int8-dynamic" and w.dtype == torch.float32 and numpy_blas() is not None

    def __init__(self, w: Weights, spec: LlamaSpec, cache: KVCache, rope: RopeTable) -> None:
        if cache.rows < 1 or cache.dtype != torch.float32 or not self.fits(w):
            raise ValueError("NumpyRowStep runs float32 weights on a float32 cache with a row")
        self.weights, self.data, self.rope = w, cache.data, rope  # what it was built for
        d, kvh = spec.head_dim, spec.num_kv_heads
        nq, nkv = spec.num_heads * d, kvh * d
        self.eps, self.inv_h, self.inter, self.d = spec.rms_norm_eps, 1.0 / spec.hidden_size, spec.intermediate_size, d
        self.nq, self.qk_end, self.rot = nq, nq + nkv, nq + 2 * nkv
        self.pairs = (spec.num_heads + kvh, 2, d // 2)
        self.q_shape, self.kv_shape = (kvh, spec.num_heads // kvh, d), (2, kvh, d)
        self.embed, self.head = _array(w.embed), _array(w.head)
        self.head_norm = _array(w.head_norm)
        self.cos, self.sin = _array(rope.cos), _array(rope.sin)
        # (layers, 2, rows, kv heads, capacity, head dim): the plan holds views of its memory
        data = cache.data.numpy()
        self.plan: list[tuple[Any, ...]] = []
        for lw, layer in zip(w.layers, data[:, :, 0], strict=True):
            matrices = tuple(_array(m) for m in lw.each())
            self.plan.append((*matrices, layer, *(_array(v) for v in lw.extras())))

    def _scale(self, x: np.ndarray) -> float:
        """RMSNorm's 1/rms of the row (the norm's weight is folded into the next product)."""
        return 1.0 / math.sqrt(float(np.dot(x[0], x[0])) * self.inv_h + self.eps)

    def _head_norms(self, qkv: np.ndarray, q_norm: np.ndarray, k_norm: np.ndarray) -> None:
        d, eps = self.d, self.eps
        for part, weight in ((qkv[: self.nq], q_norm), (qkv[self.nq : self.qk_end], k_norm)):
            heads = part.reshape(-1, d)
            rms = np.sqrt(np.mean(heads * heads, axis=1, keepdims=True) + eps)
            heads /= rms
            heads *= weight

    def __call__(self, token: int, pos: int) -> torch.Tensor:
        nq, qk_end, rot, inter, n = self.nq, self.qk_end, self.rot, self.inter, pos + 1
        cos, sin, scale, matmul = self.cos[pos], self.sin[pos], self._scale, np.matmul
        x = self.embed[token : token + 1]
        for w_qkv, w_o, w_gate_up, w_down, layer, qkv_bias, o_bias, q_norm, k_norm in self.plan:
            qkv = matmul(x, w_qkv)[0]
            qkv *= scale(x)
            if qkv_bias is not None:
                qkv += qkv_bias
            if q_norm is not None:
                self._head_norms(qkv, q_norm, k_norm)
            qk = qkv[:qk_end].reshape(self.pairs)
            swapped = qk[:, ::-1] * sin
            qk *= cos
            qk += swapped
            layer[:, :, pos] = qkv[nq:rot].reshape(self.kv_shape)
            scores = matmul(qkv[:nq].reshape(self.q_shape), layer[0, :, :n].transpose(0, 2, 1))
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            att = matmul(scores, layer[1, :, :n])
            out = matmul(att.reshape(1, nq), w_o)
            out += x
            x = out
            if o_bias is not None:
                x += o_bias
            gate_up = matmul(x, w_gate_up)
            gate_up *= scale(x)
            gate, up = gate_up[:, :inter], gate_up[:, inter:]
            sig = np.tanh(gate * 0.5)
            sig += 1.0
            sig *= 0.5
            gate *= sig
            gate *= up
            out = matmul(gate, w_down)
            out += x
            x = out
        logits = matmul(x if self.head_norm is None else x * self.head_norm, self.head)[0]
        logits *= scale(x)
        return torch.from_numpy(logits)
