"""The `fast` engine: a compact decoder for Llama-architecture weights, built for batch 1.

A 5 M-parameter model does ~10 MFLOP per token but reads ~21 MB of fp32 weights, so a decode
step costs one pass over memory plus per-operator dispatch overhead; the design cuts both:

* weights are laid out once at load, transposed to (in, out) for row-vector `addmm`: Q, K, V
  share one matrix (with `1/sqrt(head_dim)` folded into Q), gate and up share another, and each
  RMSNorm weight is folded into the matrix that follows it. The step then computes the norm's
  scale as one Python float (`vector_norm`) passed as `addmm`'s `alpha`, instead of ~8 ops;
* RoPE is `x*cos + swap_halves(x)*sin` with a precomputed (position, 2, head_dim/2) table
  whose sine's first half is negated: three element-wise ops, no `cat`;
* a preallocated KV cache (layers × 2 × kv_heads × capacity × head_dim) takes the new K and V
  with one copy per layer; attention is `bmm` → `softmax` → `bmm` on the cache slice (GQA by
  viewing Q as kv_heads × group), cheaper at one query than SDPA here;
* residual adds ride inside `addmm`; prefill and `_forward_full` share a sequence path with
  causal SDPA; everything runs under `torch.inference_mode` with the engine's thread count;
* `sample_many` (best-of-N) prefills once and decodes the N rows together: `engines/batch.py`.

Reads `config.json` and `model.safetensors` (or a sharded index) itself, through
`safetensors.torch.load_file` only, without importing `transformers`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from models.engines.base import Candidate, LocalEngine, SamplingParams, check_rows
from models.engines.codec import TextCodec
from models.errors import EngineError, GenerationInputError

__all__ = ["FastEngine"]

#: Intra-op threads when `threads=None`. Measured with `python -m bench decode` on the 2-core
#: reference machine: with another process busy (a training job), 2 threads decode ~40× slower
#: than 1 (each parallel op waits at a barrier for the descheduled thread), and the step is
#: bound by streaming ~21 MB of fp32 weights, which one core already does at DRAM speed.
DEFAULT_THREADS = 1
#: The KV cache starts at most this long and doubles on demand up to max_position_embeddings.
_INITIAL_CAPACITY = 4096


@dataclass(frozen=True)
class LlamaSpec:
    """The shape of a Llama model, read from its `config.json`."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int
    tie_word_embeddings: bool

    @classmethod
    def read(cls, folder: Path) -> LlamaSpec:
        """Parse and check `folder/config.json`; raise `EngineError` listing every problem."""
        path = folder / "config.json"
        try:
            cfg = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineError(f"{path}: cannot read the model config ({exc})") from exc
        if not isinstance(cfg, dict):
            raise EngineError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
        problems = _unsupported(cfg)
        if problems:
            raise EngineError(f"{path}: the fast engine does not support this model: " + "; ".join(problems))
        heads = int(cfg["num_attention_heads"])
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(_rope(cfg).get("rope_theta", 10000.0)),
            max_positions=int(cfg.get("max_position_embeddings") or 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


def _rope(cfg: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings in either format: transformers 5 `rope_parameters`, or 4.x `rope_theta`
    plus `rope_scaling`."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict):
        return params
    out: dict[str, Any] = dict(cfg.get("rope_scaling") or {})
    out.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    return out


def _unsupported(cfg: dict[str, Any]) -> list[str]:
    """Every reason this config is outside what the fast engine implements (empty: fine)."""
    problems = []
    if cfg.get("model_type") != "llama":
        problems.append(f"model_type is {cfg.get('model_type')!r}, only 'llama' is supported")
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
    ):
        if not isinstance(cfg.get(key), int):
            problems.append(f"{key} is missing or not an integer")
    rope = _rope(cfg)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        problems.append(f"rope type {rope_type!r} is not supported (only plain RoPE, no rope_scaling)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            problems.append(f"{key}=true is not supported")
    if cfg.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act is {cfg.get('hidden_act')!r}, only 'silu' is supported")
    heads, kv = (
        cfg.get("num_attention_heads"),
        cfg.get("num_key_value_heads") or cfg.get("num_attention_heads"),
    )
    if isinstance(heads, int) and isinstance(kv, int) and (kv <= 0 or heads % kv):
        problems.append(f"num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv})")
    head_dim = cfg.get("head_dim")
    if head_dim is None and isinstance(heads, int) and heads > 0 and isinstance(cfg.get("hidden_size"), int):
        head_dim = cfg["hidden_size"] // heads
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        problems.append(f"head_dim must be a positive even integer for RoPE, not {head_dim!r}")
    return problems


def _load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of `model.safetensors`, or of the shards its `.index.json` lists."""
    single = folder / "model.safetensors"
    if single.exists():
        return load_file(str(single))
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        raise EngineError(f"{folder}: no model.safetensors (or sharded index) to load")
    shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        tensors.update(load_file(str(folder / shard)))
    return tensors


class _Layer:
    """One decoder block's fused weights, each (in_features, out_features)."""

    __slots__ = ("w_down", "w_gate_up", "w_o", "w_qkv")

    def __init__(self, w_qkv: torch.Tensor, w_o: torch.Tensor, w_gate_up: torch.Tensor, w_down: torch.Tensor) -> None:
        self.w_qkv, self.w_o, self.w_gate_up, self.w_down = w_qkv, w_o, w_gate_up, w_down


def _fuse(parts: list[tuple[torch.Tensor, float]], norm: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(out_i, in) weights → one contiguous (in, sum out_i) matrix: their transposes side by
    side, each times its scale, with an RMSNorm weight folded into the rows (the inputs).
    One transposing copy per part straight from the (memory-mapped) file, then in-place scales."""
    fused = torch.empty(parts[0][0].shape[1], sum(w.shape[0] for w, _ in parts), dtype=torch.float32)
    start = 0
    for w, scale in parts:
        block = fused[:, start : start + w.shape[0]]
        block.copy_(w.t())
        if scale != 1.0:
            block.mul_(scale)
        start += w.shape[0]
    if norm is not None:
        fused.mul_(norm.to(torch.float32)[:, None])
    return fused.to(dtype)


def _build_layer(t: dict[str, torch.Tensor], i: int, spec: LlamaSpec, dtype: torch.dtype) -> _Layer:
    """Fuse layer `i`: norm1 ⊙ [Q/sqrt(d); K; V], o, norm2 ⊙ [gate; up], down."""
    p = f"model.layers.{i}."
    h, d, inter = spec.hidden_size, spec.head_dim, spec.intermediate_size
    nq, nkv = spec.num_heads * d, spec.num_kv_heads * d
    shapes = {
        "self_attn.q_proj.weight": (nq, h),
        "self_attn.k_proj.weight": (nkv, h),
        "self_attn.v_proj.weight": (nkv, h),
        "self_attn.o_proj.weight": (h, nq),
        "mlp.gate_proj.weight": (inter, h),
        "mlp.up_proj.weight": (inter, h),
        "mlp.down_proj.weight": (h, inter),
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
    }
    w: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        tensor = t.get(p + name)
        if tensor is None:
            raise EngineError(f"the weights lack tensor {p + name!r}")
        if tuple(tensor.shape) != shape:
            raise EngineError(f"{p + name} is {tuple(tensor.shape)}, config.json implies {shape}")
        w[name] = tensor
    return _Layer(
        _fuse(
            [
                (w["self_attn.q_proj.weight"], 1.0 / math.sqrt(d)),
                (w["self_attn.k_proj.weight"], 1.0),
                (w["self_attn.v_proj.weight"], 1.0),
            ],
            w["input_layernorm.weight"],
            dtype,
        ),
        _fuse([(w["self_attn.o_proj.weight"], 1.0)], None, dtype),
        _fuse(
            [(w["mlp.gate_proj.weight"], 1.0), (w["mlp.up_proj.weight"], 1.0)],
            w["post_attention_layernorm.weight"],
            dtype,
        ),
        _fuse([(w["mlp.down_proj.weight"], 1.0)], None, dtype),
    )


class FastEngine(LocalEngine):
    """Batch-1 Llama decoder with a static KV cache; its logits match the `hf` engine's.

    `threads=None` uses `DEFAULT_THREADS`. PyTorch's intra-op thread count is process-wide:
    each of the engine's calls (`_prefill`, `_step`, `_forward_full`, loading) sets its own
    and restores the previous value on return (a pair of `set_num_threads` calls costs ~4 µs),
    so nothing leaks into the caller's code between streamed pieces, and inference mode
    likewise. While a call runs, other threads of the process see the engine's count.
    """

    name = "fast"

    def __init__(
        self,
        folder: str | Path,
        dtype: torch.dtype = torch.float32,
        threads: int | None = None,
        adapter: str | Path | None = None,
    ) -> None:
        folder = Path(folder)
        spec = LlamaSpec.read(folder)
        self.folder, self.spec, self.dtype = folder, spec, dtype
        if threads is not None and threads < 1:
            raise EngineError(f"threads must be >= 1 (or None for the default), not {threads}")
        self.threads = threads or DEFAULT_THREADS
        super().__init__(TextCodec(folder), max_positions=spec.max_positions)
        self._nq, self._nkv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        self._dims = (
            spec.rms_norm_eps,
            1.0 / spec.hidden_size,
            spec.intermediate_size,
            self._nq,
            self._nq + self._nkv,  # Q and K: the part RoPE rotates
            self._nq + 2 * self._nkv,
            (spec.num_heads + spec.num_kv_heads, 2, spec.head_dim // 2),
            (spec.num_kv_heads, spec.num_heads // spec.num_kv_heads, spec.head_dim),
            (2, spec.num_kv_heads, spec.head_dim),
        )
        self._zero = torch.zeros(1, dtype=dtype)  # addmm's ignored input when beta=0
        self._capacity = 0
        self._pos = 0
        # Our thread count here too: on a busy machine, parallel copies wait for a stalled thread.
        with _Scope(self.threads):
            tensors = _load_tensors(folder)
            self.adapter = None
            if adapter is not None:
                from models.training.lora import merge_lora

                self.adapter = {"path": str(adapter), **merge_lora(tensors, Path(adapter))}
            self._n_params = sum(t.numel() for t in tensors.values())
            self._load_weights(tensors, spec, dtype)
            del tensors
            self._ensure_capacity(min(spec.max_positions, _INITIAL_CAPACITY))
            # An optimized version's settings from companion.json (int8, bf16, threads): engines/quant.py.
            from models.engines.quant import apply_runtime, read_runtime

            apply_runtime(self, read_runtime(folder), threads_chosen=threads is not None)

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
        return isinstance(cfg, dict) and has_weights and not _unsupported(cfg)

    # --- loading -------------------------------------------------------------------------

    def _load_weights(self, t: dict[str, torch.Tensor], spec: LlamaSpec, dtype: torch.dtype) -> None:
        try:
            embed, norm = t["model.embed_tokens.weight"], t["model.norm.weight"]
        except KeyError as exc:
            raise EngineError(f"{self.folder}: the weights lack tensor {exc.args[0]!r}") from None
        head = embed if spec.tie_word_embeddings else t.get("lm_head.weight")
        if head is None:
            raise EngineError(f"{self.folder}: tie_word_embeddings is false but there is no lm_head.weight")
        for what, w in (("embed_tokens", embed), ("lm_head", head)):
            if tuple(w.shape) != (spec.vocab_size, spec.hidden_size):
                raise EngineError(
                    f"{self.folder}: {what} is {tuple(w.shape)}, config.json says "
                    f"({spec.vocab_size}, {spec.hidden_size})"
                )
        # A private copy: load_file maps the file, which a training run may rewrite in place.
        self._embed = embed.to(dtype, copy=True).contiguous()
        self._lm_head = _fuse([(head, 1.0)], norm, dtype)
        self._layers = [_build_layer(t, i, spec, dtype) for i in range(spec.num_layers)]

    def _ensure_capacity(self, n: int) -> None:
        """Grow the KV cache and the RoPE table to hold `n` positions (doubling, data kept)."""
        if n <= self._capacity:
            return
        spec = self.spec
        if n > spec.max_positions:
            raise GenerationInputError(f"{n} tokens exceed the model's context of {spec.max_positions}")
        cap = min(spec.max_positions, max(n, 2 * self._capacity))
        shape = (spec.num_layers, 2, spec.num_kv_heads, cap, spec.head_dim)
        kv = torch.zeros(shape, dtype=self.dtype)
        if self._capacity:
            kv[:, :, :, : self._capacity] = self._kv
        self._kv = kv
        # What the step reads per layer, unpacked once: weights, cache, K^T and V views.
        self._plan = [
            (w.w_qkv, w.w_o, w.w_gate_up, w.w_down, layer, layer[0].transpose(1, 2), layer[1])
            for w, layer in zip(self._layers, kv, strict=True)
        ]
        # As transformers computes them: inv_freq in fp32, positions × inv_freq, cos and sin.
        exponent = torch.arange(0, spec.head_dim, 2, dtype=torch.float) / spec.head_dim
        inv_freq = 1.0 / (spec.rope_theta**exponent)
        freqs = torch.arange(cap, dtype=torch.float)[:, None] * inv_freq[None, :]
        cos, sin = freqs.cos(), freqs.sin()
        self._cos = torch.stack((cos, cos), dim=1).to(self.dtype)
        self._sin = torch.stack((-sin, sin), dim=1).to(self.dtype)
        self._capacity = cap

    # --- primitives ----------------------------------------------------------------------

    def _prefill(self, ids: list[int]) -> torch.Tensor:
        if not ids:
            raise GenerationInputError("cannot prefill an empty prompt: give at least one token")
        with _Scope(self.threads):
            self._ensure_capacity(len(ids))
            self._pos = 0
            logits = self._forward_seq(torch.tensor([ids]), write_cache=True, last_only=True)
            self._pos = len(ids)
            return logits[0, -1]

    def _step(self, token: int) -> torch.Tensor:
        if not 0 <= token < self.spec.vocab_size:
            raise GenerationInputError(f"token id {token} is outside the vocabulary (0..{self.spec.vocab_size - 1})")
        with _Scope(self.threads):
            if self._pos >= self._capacity:
                self._ensure_capacity(self._pos + 1)
            logits = self._step_logits(token, self._pos)
            self._pos += 1
            return logits

    def _forward_full(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dim() != 2:
            raise EngineError(f"_forward_full takes a (batch, time) tensor, not {tuple(ids.shape)}")
        with _Scope(self.threads):
            self._ensure_capacity(ids.shape[1])
            return self._forward_seq(ids, write_cache=False, last_only=False)

    def sample_many(self, prompt: str | Sequence[dict[str, str]], params: SamplingParams, n: int) -> list[Candidate]:
        """`Engine.sample_many` with the n rows decoded together in batched steps."""
        from models.engines.batch import decode_many

        check_rows(n)
        params.check()
        ids, suppress = self._prompt_ids(prompt, params)
        with self.lock:
            return decode_many(self, ids, params, n, suppress)

    # --- forward passes ------------------------------------------------------------------

    def _step_logits(self, token: int, pos: int) -> torch.Tensor:
        """One token at `pos` against the cache: the per-token hot path (see module doc)."""
        eps, inv_h, inter, nq, qk_end, rot, pairs, q_shape, kv_shape = self._dims
        zero, n = self._zero, pos + 1
        cos, sin = self._cos[pos], self._sin[pos]
        vector_norm, addmm, bmm, softmax, silu = torch.linalg.vector_norm, torch.addmm, torch.bmm, torch.softmax, F.silu
        x = self._embed[token : token + 1]
        for w_qkv, w_o, w_gate_up, w_down, kv, keys_t, values in self._plan:
            scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
            qkv = addmm(zero, x, w_qkv, beta=0, alpha=scale).view(-1)
            qk = qkv[:qk_end].view(pairs)
            swapped = qk.flip(1)
            qk.mul_(cos).addcmul_(swapped, sin)
            kv.select(2, pos).copy_(qkv[nq:rot].view(kv_shape))
            scores = bmm(qkv[:nq].view(q_shape), keys_t.narrow(2, 0, n))
            att = bmm(softmax(scores, dim=-1), values.narrow(1, 0, n))
            x = addmm(x, att.view(1, nq), w_o)
            scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
            gate_up = addmm(zero, x, w_gate_up, beta=0, alpha=scale)
            x = addmm(x, silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), w_down)
        scale = 1.0 / math.sqrt(float(vector_norm(x)) ** 2 * inv_h + eps)
        return addmm(zero, x, self._lm_head, beta=0, alpha=scale).view(-1)

    def _matrices(self) -> tuple[list[tuple[Any, Any, Any, Any]], Any, Callable[[Any, Any], torch.Tensor]]:
        """Per-layer (qkv, o, gate_up, down) matrices, the LM head, and how to multiply an
        activation by one: fp32/bf16 tensors with `torch.mm`, or the int8 version's packed
        matrices with `quantized::linear_dynamic` (`engines/quant.py`)."""
        packed = getattr(self, "_int8_layers", None)
        if packed is not None:
            return list(packed), self._int8_head, torch.ops.quantized.linear_dynamic
        layers = [(w.w_qkv, w.w_o, w.w_gate_up, w.w_down) for w in self._layers]
        return layers, self._lm_head, torch.mm

    def _forward_seq(self, ids: torch.Tensor, write_cache: bool, last_only: bool) -> torch.Tensor:
        """A (B, T) batch from position 0 with causal attention; fills the cache if asked (B=1).
        One pass for every weight format (prefill and scoring; the per-token step is specialized)."""
        spec = self.spec
        b, t = ids.shape
        eps, hidden, d, inter = spec.rms_norm_eps, (spec.hidden_size,), spec.head_dim, spec.intermediate_size
        nq, rot = self._nq, self._nq + 2 * self._nkv
        pairs = (b, t, spec.num_heads + spec.num_kv_heads, 2, d // 2)
        group = spec.num_heads // spec.num_kv_heads
        cos, sin = self._cos[:t, None], self._sin[:t, None]
        layers, head, mm = self._matrices()
        x = F.embedding(ids, self._embed).view(b * t, spec.hidden_size)
        for (w_qkv, w_o, w_gate_up, w_down), kv in zip(layers, self._kv, strict=True):
            qkv = mm(F.rms_norm(x, hidden, None, eps), w_qkv).view(b, t, -1)
            qk = qkv[..., : rot - self._nkv].view(pairs)
            swapped = qk.flip(3)
            qk.mul_(cos).addcmul_(swapped, sin)
            q = qkv[..., :nq].view(b, t, spec.num_heads, d).transpose(1, 2)
            k, v = qkv[..., nq:rot].view(b, t, 2, spec.num_kv_heads, d).permute(2, 0, 3, 1, 4)
            if write_cache:
                kv[:, :, :t].copy_(torch.stack((k[0], v[0])))
            if group > 1:
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0)
            x = mm(att.transpose(1, 2).reshape(b * t, nq), w_o).add_(x)
            gate_up = mm(F.rms_norm(x, hidden, None, eps), w_gate_up)
            x = mm(F.silu(gate_up[:, :inter]).mul_(gate_up[:, inter:]), w_down).add_(x)
        x = x.view(b, t, spec.hidden_size)
        if last_only:
            x = x[:, -1:]
        tt = x.shape[1]
        return mm(F.rms_norm(x, hidden, None, eps).reshape(b * tt, spec.hidden_size), head).view(b, tt, -1)

    # --- reporting -----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        extra = {"architecture": "LlamaForCausalLM", "parameters": self._n_params, "threads": self.threads}
        if self.adapter:
            extra["adapter"] = self.adapter
        return super().info() | extra


class _Scope:
    """Inference mode plus an intra-op thread count, restored on exit. Nested scopes with
    the same count cost an integer compare (no `set_num_threads` call)."""

    __slots__ = ("_mode", "_prev", "threads")

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._mode = torch.inference_mode()
        self._prev = 0

    def __enter__(self) -> None:
        self._mode.__enter__()
        self._prev = torch.get_num_threads()
        if self._prev != self.threads:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        if self._prev != self.threads:
            torch.set_num_threads(self._prev)
        self._mode.__exit__(*exc)
