"""A Llama model's weights as the engine multiplies them, and their matmul strategy.

At load every block's matrices are laid out once, transposed to (in, out) for row-vector
`mm`: Q, K, V share one matrix (with `1/sqrt(head_dim)` folded into Q), gate and up share
another, and each RMSNorm weight is folded into the matrix that follows it, so the block
computes a weightless `rms_norm`. The same `Weights` come in three formats:

* `float32` (as loaded) and `bfloat16` (`to_dtype`): plain tensors, multiplied with `torch.mm`;
  bfloat16 matrices are kept in oneDNN's packed layout and multiplied by oneDNN where torch's
  oneDNN supports bfloat16 on this CPU (`onednn_bf16`; a tied head stays plain for the embedding);
* `int8-dynamic` (`quantized_int8`): every matrix per-output-channel symmetric int8, packed
  for FBGEMM and multiplied with `quantized::linear_dynamic` (activations quantized per call,
  int32 accumulation, fp32 out). Decode streams ~4× fewer bytes; the embedding stays fp32.

A format change returns new `Weights`; nothing is patched in place.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from models.engines.llama.spec import LlamaSpec
from models.errors import EngineError

__all__ = [
    "FORMATS", "LayerWeights", "TensorFiles", "Weights", "build_weights", "int8_available", "load_tensors",
]  # fmt: skip

FORMATS = ("float32", "bfloat16", "int8-dynamic")


def int8_available() -> bool:
    """Whether this torch build has the FBGEMM/x86 dynamic int8 linear kernels."""
    engines = torch.backends.quantized.supported_engines
    return any(e in engines for e in ("fbgemm", "x86")) and hasattr(torch.ops.quantized, "linear_dynamic")


_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}  # fmt: skip


class TensorFiles(MutableMapping[str, torch.Tensor]):
    """The tensors of a model folder's safetensors file(s), read one at a time on access.

    Each access reads that tensor's bytes with plain file reads into a new tensor (no memory
    map stays behind, so only what the caller keeps counts toward the process's memory). Keys
    assigned here (a merged LoRA module) shadow the file's. `shapes` and `dtypes` come from
    the headers, without reading data."""

    def __init__(self, folder: Path, preload_below: int = 0) -> None:
        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        if single.exists():
            files = [single]
        elif index.exists():
            files = [folder / n for n in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        else:
            raise EngineError(f"{folder}: no model.safetensors (or sharded index) to load")
        self._where: dict[str, tuple[Path, int, int, torch.dtype, tuple[int, ...]]] = {}
        for path in files:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                dtype = _DTYPES.get(info.get("dtype"))
                if dtype is None:
                    raise EngineError(f"{path}: tensor {name!r} has dtype {info.get('dtype')!r}, not one we read")
                start, end = info["data_offsets"]
                self._where[name] = (path, 8 + n + int(start), int(end) - int(start), dtype, tuple(info["shape"]))
        self._set: dict[str, torch.Tensor] = {}
        self.streaming = sum(p.stat().st_size for p in files) >= preload_below
        """False: the files were small enough to map whole (`preload_below` bytes): faster to
        load, and the memory they take is small. Mapped tensors share the file's pages."""
        if not self.streaming:
            from safetensors.torch import load_file

            for path in files:
                self._set.update(load_file(str(path)))

    def __getitem__(self, name: str) -> torch.Tensor:
        if name in self._set:
            return self._set[name]
        path, offset, nbytes, dtype, shape = self._where[name]
        buf = torch.empty(nbytes, dtype=torch.uint8)
        with open(path, "rb") as f:
            f.seek(offset)
            if f.readinto(memoryview(buf.numpy())) != nbytes:
                raise EngineError(f"{path}: tensor {name!r} is cut short")
        return buf.view(dtype).reshape(shape)

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self._set[name] = value

    def __delitem__(self, name: str) -> None:
        self._set.pop(name, None)
        self._where.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*self._where, *self._set]))

    def __len__(self) -> int:
        return len(set(self._where) | set(self._set))

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._set[name].shape) if name in self._set else self._where[name][4]

    def dtype(self, name: str) -> torch.dtype:
        return self._set[name].dtype if name in self._set else self._where[name][3]

    def numel(self) -> int:
        """Parameters in all tensors (from the headers)."""
        return sum(math.prod(self.shape(k)) for k in self)

    def stored_dtype(self) -> torch.dtype:
        """The dtype most of the weights are stored in (by element count)."""
        counts: dict[torch.dtype, int] = {}
        for k in self:
            counts[self.dtype(k)] = counts.get(self.dtype(k), 0) + math.prod(self.shape(k))
        return max(counts, key=lambda d: counts[d]) if counts else torch.float32


#: Weight files below this size are mapped whole (fast); larger ones are read tensor by tensor.
PRELOAD_BELOW = 256 * 2**20


def load_tensors(folder: Path, preload_below: int = PRELOAD_BELOW) -> TensorFiles:
    """All tensors of `model.safetensors`, or of the shards its `.index.json` lists: mapped
    whole when small, else read on access (see `TensorFiles`)."""
    return TensorFiles(folder, preload_below)


@dataclass(frozen=True)
class LayerWeights:
    """One decoder block's fused matrices, each (in_features, out_features) or packed int8."""

    qkv: Any
    o: Any
    gate_up: Any
    down: Any
    qkv_bias: torch.Tensor | None = None
    """Added to the QKV product (Q's part pre-scaled like Q), for Qwen2 and biased Llamas."""
    o_bias: torch.Tensor | None = None
    q_norm: torch.Tensor | None = None
    """Per-head RMSNorm weights on the query (times `1/sqrt(head_dim)`) and key (Qwen3)."""
    k_norm: torch.Tensor | None = None

    def each(self) -> tuple[Any, Any, Any, Any]:
        return self.qkv, self.o, self.gate_up, self.down

    def extras(self) -> tuple[torch.Tensor | None, ...]:
        """The vectors besides the matrices (biases, norms), in field order."""
        return self.qkv_bias, self.o_bias, self.q_norm, self.k_norm

    def with_matrices(self, matrices: Sequence[Any], dtype: torch.dtype | None = None) -> LayerWeights:
        """The same layer with new matrices (another format); vectors cast to `dtype` if given."""
        vectors = [v if v is None or dtype is None else v.to(dtype) for v in self.extras()]
        return LayerWeights(*matrices, *vectors)


@dataclass(frozen=True)
class Weights:
    """Embedding, fused blocks and (norm-folded) LM head in one format; `mm(x, w)` multiplies."""

    format: str
    embed: torch.Tensor
    head: Any
    layers: tuple[LayerWeights, ...]
    nbytes: int
    """Bytes held in memory: what decode streams per token, plus the embedding."""
    head_norm: torch.Tensor | None = None
    """The final RMSNorm's weight, applied to the activation before the head, when the head is
    the embedding itself (tied weights: one matrix in memory, not two). None: folded into the head."""

    @property
    def head_is_embedding(self) -> bool:
        head = self.head
        return (
            isinstance(head, torch.Tensor)
            and not head.is_mkldnn
            and head.untyped_storage().data_ptr() == self.embed.untyped_storage().data_ptr()
        )

    @property
    def dtype(self) -> torch.dtype:
        """The activations' dtype (the embedding's)."""
        return self.embed.dtype

    @property
    def mm(self) -> Callable[[torch.Tensor, Any], torch.Tensor]:
        if self.format == "int8-dynamic":
            return torch.ops.quantized.linear_dynamic
        return onednn_mm if self.format == "bfloat16" and onednn_bf16() else torch.mm

    def to_dtype(self, dtype: torch.dtype) -> Weights:
        """The same float weights in `dtype` (float32 or bfloat16)."""
        if self.format == "int8-dynamic":
            raise EngineError("int8 weights cannot change dtype: load the float32 model again")
        fmt = {torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype)
        if fmt is None:
            raise EngineError(f"dtype {dtype} is not supported (float32 or bfloat16)")
        layers = tuple(
            lw.with_matrices([_for_format(unpacked(w).to(dtype), dtype) for w in lw.each()], dtype)
            for lw in self.layers
        )
        if self.head_is_embedding:
            head = tied_head(self.embed.to(dtype))
            embed = head.t()
        else:
            embed, head = self.embed.to(dtype), _for_format(unpacked(self.head).to(dtype), dtype)
        norm = self.head_norm.to(dtype) if self.head_norm is not None else None
        out = replace(self, format=fmt, embed=embed, head=head, layers=layers, head_norm=norm)
        return replace(out, nbytes=_float_bytes(out))

    def quantized_int8(self) -> Weights:
        """These float32 weights as packed per-channel int8 (the embedding stays float32)."""
        if not int8_available():
            raise EngineError("int8 quantization needs torch's FBGEMM/x86 quantized kernels, absent from this build")
        if self.format != "float32":
            raise EngineError("int8 quantization starts from float32 weights")
        total = self.embed.numel() * self.embed.element_size()
        layers = []
        for lw in self.layers:
            packed = []
            for w in lw.each():
                p, n = _pack(w)
                packed.append(p)
                total += n
            layers.append(lw.with_matrices(packed))
        head, n = _pack(self.head)
        return Weights("int8-dynamic", self.embed, head, tuple(layers), total + n, self.head_norm)


def tied_head(embed: torch.Tensor) -> torch.Tensor:
    """A tied embedding (vocab, hidden) as one contiguous (hidden, vocab) matrix: the head's
    layout. The embedding becomes its transposed view, so the model still holds one copy. The
    head is the largest matrix a decode step reads (8.4 of the embedded model's 21 MB), and
    MKL's one-row matmul over a transposed view reads it at about half the speed of the
    contiguous layout (docs/benchmarks.md), while the embedding lookup only gathers a few
    columns."""
    if embed.t().is_contiguous():  # already in the head's layout (a view of one)
        return embed.t()
    return embed.t().contiguous()


@functools.cache
def onednn_bf16() -> bool:
    """Whether bfloat16 matrices are kept in oneDNN's packed layout and multiplied by oneDNN
    (`torch.ops.mkldnn._linear_pointwise`). torch's own bfloat16 `mm` is slow at one row: the
    0.5B shape's head took 33 ms, oneDNN 18 ms, and a whole token's products 96 against 35 ms on
    one thread (docs/benchmarks.md, "Session 17"); the numbers are the same. Off where torch
    has no oneDNN or the CPU no bfloat16 support in it."""
    ops = torch.ops.mkldnn
    needed = ("_is_mkldnn_bf16_supported", "_reorder_linear_weight", "_linear_pointwise")
    try:  # inductor's own ops: a torch without one of them keeps the plain path
        return bool(
            torch.backends.mkldnn.is_available()
            and all(hasattr(ops, name) for name in needed)
            and ops._is_mkldnn_bf16_supported()  # noqa: SLF001
        )
    except RuntimeError:
        return False


def onednn_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """`x @ w` for a (in, out) matrix, or for one packed by `_for_format` (oneDNN's layout)."""
    if w.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [None], "")  # noqa: SLF001 (inductor's op)
    return torch.mm(x, w)


def _for_format(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (in, out) matrix as its format keeps it: bfloat16 packed for oneDNN (`onednn_bf16`)."""
    if dtype == torch.bfloat16 and onednn_bf16():
        return torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous(), 1)  # noqa: SLF001 (inductor's op)
    return w


def unpacked(w: torch.Tensor) -> torch.Tensor:
    """A matrix back as a plain (in, out) tensor (oneDNN's packed layout is (out, in))."""
    return w.to_dense().t().contiguous() if w.is_mkldnn else w


def _float_bytes(w: Weights) -> int:
    vectors = [v for lw in w.layers for v in lw.extras() if v is not None]
    heads = [] if w.head_is_embedding else [w.head]
    tensors = [w.embed, *heads, *(m for lw in w.layers for m in lw.each()), *vectors]
    return sum(t.numel() * t.element_size() for t in tensors)


def _pack(w_in_out: torch.Tensor) -> tuple[Any, int]:
    """(in, out) fp32 → FBGEMM-packed per-output-channel symmetric int8; and its byte count."""
    w = w_in_out.t().contiguous().float()  # (out, in)
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12).double()
    zeros = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # quantized tensor types are deprecated in favour of torchao (NOTES.md)
        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*", category=UserWarning)
        q = torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None), w.numel() + 4 * w.shape[0]


def _fuse(parts: list[tuple[torch.Tensor, float]], norm: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """(out_i, in) weights → one contiguous (in, sum out_i) matrix in `dtype`: their transposes
    side by side, each times its scale, with an RMSNorm weight folded into the rows (the
    inputs). Scales and norm are applied in float32, one part at a time, and rounded to
    `dtype` once; only the result and one part's float32 copy are ever in memory."""
    fused = torch.empty(parts[0][0].shape[1], sum(w.shape[0] for w, _ in parts), dtype=dtype)
    factor = norm.to(torch.float32)[:, None] if norm is not None else None
    start = 0
    for w, scale in parts:
        block = fused[:, start : start + w.shape[0]]
        if dtype == torch.float32 or (factor is None and scale == 1.0 and w.dtype == dtype):
            block.copy_(w.t())
            if scale != 1.0:
                block.mul_(scale)
            if factor is not None:
                block.mul_(factor)
        else:
            part = w.t().to(torch.float32)
            if scale != 1.0:
                part.mul_(scale)
            if factor is not None:
                part.mul_(factor)
            block.copy_(part)
            del part
        start += w.shape[0]
    return fused


def _split(fused: torch.Tensor, sizes: Sequence[int]) -> list[torch.Tensor]:
    return list(torch.split(fused, list(sizes), dim=0))


def _layer_tensors(t: dict[str, torch.Tensor], i: int, spec: LlamaSpec) -> dict[str, torch.Tensor]:
    """Layer `i`'s tensors under Llama's names, checked against the config's shapes; Phi-3's
    fused `qkv_proj` and `gate_up_proj` are split (views, no copy)."""
    p = f"model.layers.{i}."
    h, d, inter = spec.hidden_size, spec.head_dim, spec.intermediate_size
    nq, nkv = spec.num_heads * d, spec.num_kv_heads * d
    shapes: dict[str, tuple[int, ...]] = {
        "self_attn.o_proj.weight": (h, nq),
        "mlp.down_proj.weight": (h, inter),
        "input_layernorm.weight": (h,),
        "post_attention_layernorm.weight": (h,),
    }
    if spec.fused_projections:
        shapes |= {"self_attn.qkv_proj.weight": (nq + 2 * nkv, h), "mlp.gate_up_proj.weight": (2 * inter, h)}
    else:
        shapes |= {
            "self_attn.q_proj.weight": (nq, h),
            "self_attn.k_proj.weight": (nkv, h),
            "self_attn.v_proj.weight": (nkv, h),
            "mlp.gate_proj.weight": (inter, h),
            "mlp.up_proj.weight": (inter, h),
        }
    if spec.qkv_bias:
        shapes |= {"self_attn.q_proj.bias": (nq,), "self_attn.k_proj.bias": (nkv,), "self_attn.v_proj.bias": (nkv,)}
    if spec.o_bias:
        shapes["self_attn.o_proj.bias"] = (h,)
    if spec.qk_norm:
        shapes |= {"self_attn.q_norm.weight": (d,), "self_attn.k_norm.weight": (d,)}
    w: dict[str, torch.Tensor] = {}
    for name, shape in shapes.items():
        tensor = t.get(p + name)
        if tensor is None:
            raise EngineError(f"the weights lack tensor {p + name!r}")
        if tuple(tensor.shape) != shape:
            raise EngineError(f"{p + name} is {tuple(tensor.shape)}, config.json implies {shape}")
        w[name] = tensor
    if spec.fused_projections:
        q, k, v = _split(w.pop("self_attn.qkv_proj.weight"), (nq, nkv, nkv))
        gate, up = _split(w.pop("mlp.gate_up_proj.weight"), (inter, inter))
        w |= {"self_attn.q_proj.weight": q, "self_attn.k_proj.weight": k, "self_attn.v_proj.weight": v}
        w |= {"mlp.gate_proj.weight": gate, "mlp.up_proj.weight": up}
    return w


def _layer(t: dict[str, torch.Tensor], i: int, spec: LlamaSpec, dtype: torch.dtype) -> LayerWeights:
    """Fuse layer `i`: norm1 ⊙ [Q/sqrt(d); K; V], o, norm2 ⊙ [gate; up], down; and the vectors.

    The attention scale `1/sqrt(d)` is folded into Q (weights and bias); with per-head q/k
    norms it goes into the query norm's weight instead (a norm would undo it on Q)."""
    w = _layer_tensors(t, i, spec)
    scale = 1.0 / math.sqrt(spec.head_dim)
    q_scale = 1.0 if spec.qk_norm else scale
    qkv = [(w["self_attn.q_proj.weight"], q_scale), (w["self_attn.k_proj.weight"], 1.0)]
    qkv.append((w["self_attn.v_proj.weight"], 1.0))

    def vector(name: str, factor: float = 1.0) -> torch.Tensor:
        return (w[name].to(torch.float32) * factor).to(dtype)

    qkv_bias = None
    if spec.qkv_bias:
        q_bias = vector("self_attn.q_proj.bias", q_scale)
        qkv_bias = torch.cat([q_bias, vector("self_attn.k_proj.bias"), vector("self_attn.v_proj.bias")])
    return LayerWeights(
        _for_format(_fuse(qkv, w["input_layernorm.weight"], dtype), dtype),
        _for_format(_fuse([(w["self_attn.o_proj.weight"], 1.0)], None, dtype), dtype),
        _for_format(
            _fuse(
                [(w["mlp.gate_proj.weight"], 1.0), (w["mlp.up_proj.weight"], 1.0)],
                w["post_attention_layernorm.weight"],
                dtype,
            ),
            dtype,
        ),
        _for_format(_fuse([(w["mlp.down_proj.weight"], 1.0)], None, dtype), dtype),
        qkv_bias=qkv_bias,
        o_bias=vector("self_attn.o_proj.bias") if spec.o_bias else None,
        q_norm=vector("self_attn.q_norm.weight", scale) if spec.qk_norm else None,
        k_norm=vector("self_attn.k_norm.weight") if spec.qk_norm else None,
    )


def _release_freed_memory() -> None:
    """Ask glibc to hand freed heap pages back (`malloc_trim`): the per-layer buffers are freed
    but glibc keeps them mapped, so a big model's load would otherwise peak well above its
    weights. A no-op where the C library has no `malloc_trim`."""
    global _TRIM
    if _TRIM is None:
        import ctypes
        import ctypes.util

        try:
            _TRIM = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = False
    if _TRIM:
        _TRIM(0)


_TRIM: Any = None


def build_weights(t: MutableMapping[str, torch.Tensor], spec: LlamaSpec, dtype: torch.dtype, where: Path) -> Weights:
    """Checked, fused weights of every block from a Hugging Face state dict (by HF names),
    built one layer at a time from `t` (a `TensorFiles` reads each tensor as it is asked for,
    so peak memory is the result plus one layer). A tied head is the embedding itself."""
    fmt = {torch.float32: "float32", torch.bfloat16: "bfloat16"}.get(dtype)
    if fmt is None:
        raise EngineError(f"dtype {dtype} is not supported (float32 or bfloat16)")
    try:
        embed, norm = t["model.embed_tokens.weight"], t["model.norm.weight"]
    except KeyError as exc:
        raise EngineError(f"{where}: the weights lack tensor {exc.args[0]!r}") from None
    head = None if spec.tie_word_embeddings else t.get("lm_head.weight")
    if head is None and not spec.tie_word_embeddings:
        raise EngineError(f"{where}: tie_word_embeddings is false but there is no lm_head.weight")
    for what, w in (("embed_tokens", embed), ("lm_head", head)):
        if w is not None and tuple(w.shape) != (spec.vocab_size, spec.hidden_size):
            raise EngineError(
                f"{where}: {what} is {tuple(w.shape)}, config.json says ({spec.vocab_size}, {spec.hidden_size})"
            )
    # A private tensor (TensorFiles reads a copy; a plain dict may hold a memory-mapped file,
    # which a training run may rewrite in place).
    embed = embed.to(dtype, copy=not getattr(t, "streaming", False)).contiguous()
    head_t = None
    if head is None:  # transposed before the blocks load, so the two copies never meet them
        head_t = tied_head(embed)
        embed = head_t.t()
        if getattr(t, "streaming", False):
            _release_freed_memory()
    built = []
    for i in range(spec.num_layers):
        built.append(_layer(t, i, spec, dtype))
        if getattr(t, "streaming", False):
            _release_freed_memory()  # the layer's file reads and float32 parts, back to the OS
    layers = tuple(built)
    if head_t is not None:
        out = Weights(fmt, embed, head_t, layers, 0, head_norm=norm.to(dtype))
    else:
        out = Weights(fmt, embed, _for_format(_fuse([(head, 1.0)], norm, dtype), dtype), layers, 0)
    return replace(out, nbytes=_float_bytes(out))
