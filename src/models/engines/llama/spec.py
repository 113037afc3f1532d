"""The shape of a Llama-family model, read from its `config.json`, and what the engine refuses.

One block serves the Llama family as `transformers` defines it (RMSNorm, RoPE, grouped-query
attention, SwiGLU), with the few variations the common open models add:

| `model_type` | what differs from Llama |
| --- | --- |
| `llama` (Llama 2, 3.x, TinyLlama, SmolLM) | `rope_type: llama3` frequency scaling (3.1+); `attention_bias` |
| `mistral` | a sliding window (the context is capped at it: every token then sees them all) |
| `qwen2` (Qwen2, Qwen2.5) | biases on the Q, K and V projections |
| `qwen3` | RMSNorm over each head's query and key before RoPE (`q_norm`, `k_norm`) |
| `phi3` (Phi-3, Phi-3.5 mini) | Q, K, V in one `qkv_proj` and gate, up in one `gate_up_proj` |

Anything else (other RoPE scalings, partial rotary, alternating sliding windows, Gemma's
norms) is refused with the reason, and `engine: auto` falls back to `hf`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import EngineError

__all__ = ["ARCHITECTURES", "LlamaSpec", "rope_settings", "unsupported"]

#: model_type -> the class name `transformers` gives it (what `info()` reports).
ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
}
_ROPE_TYPES = ("default", "llama3")


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
    model_type: str = "llama"
    qkv_bias: bool = False
    """Biases on the Q, K, V projections (Qwen2; Llama with `attention_bias`)."""
    o_bias: bool = False
    """A bias on the output projection (Llama with `attention_bias`)."""
    qk_norm: bool = False
    """RMSNorm over each head's query and key before RoPE (Qwen3)."""
    fused_projections: bool = False
    """`qkv_proj` and `gate_up_proj` stored fused (Phi-3)."""
    rope: tuple[tuple[str, Any], ...] = ()
    """The RoPE settings (`rope_settings`) as sorted pairs, for `RopeTable`."""

    @property
    def architecture(self) -> str:
        return ARCHITECTURES.get(self.model_type, "LlamaForCausalLM")

    @property
    def rope_settings(self) -> dict[str, Any]:
        return dict(self.rope)

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
        problems = unsupported(cfg)
        if problems:
            raise EngineError(f"{path}: the fast engine does not support this model: " + "; ".join(problems))
        heads = int(cfg["num_attention_heads"])
        mtype = str(cfg.get("model_type"))
        max_positions = int(cfg.get("max_position_embeddings") or 2048)
        window = cfg.get("sliding_window")
        if mtype == "mistral" and isinstance(window, int) and 0 < window < max_positions:
            max_positions = window  # within the window, sliding and full attention are the same
        rope = rope_settings(cfg)
        return cls(
            vocab_size=int(cfg["vocab_size"]),
            hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]),
            num_layers=int(cfg["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", 10000.0)),
            max_positions=max_positions,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            model_type=mtype,
            qkv_bias=mtype == "qwen2" or bool(cfg.get("attention_bias")),
            o_bias=mtype != "qwen2" and bool(cfg.get("attention_bias")),
            qk_norm=mtype == "qwen3",
            fused_projections=mtype == "phi3",
            rope=tuple(sorted((k, v) for k, v in rope.items() if isinstance(v, int | float | str))),
        )


def rope_settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings in either format: transformers 5 `rope_parameters`, or 4.x `rope_theta`
    plus `rope_scaling`."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict):
        return params
    out: dict[str, Any] = dict(cfg.get("rope_scaling") or {})
    out.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    return out


def unsupported(cfg: dict[str, Any]) -> list[str]:
    """Every reason this config is outside what the fast engine implements (empty: fine)."""
    problems = []
    mtype = cfg.get("model_type")
    if mtype not in ARCHITECTURES:
        problems.append(f"model_type is {mtype!r}; the fast engine runs {', '.join(sorted(ARCHITECTURES))}")
    for key in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
    ):
        if not isinstance(cfg.get(key), int):
            problems.append(f"{key} is missing or not an integer")
    rope = rope_settings(cfg)
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in _ROPE_TYPES:
        problems.append(f"rope type {rope_type!r} is not supported (plain RoPE or llama3 scaling)")
    llama3_keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    if rope_type == "llama3" and not all(isinstance(rope.get(k), int | float) for k in llama3_keys):
        problems.append(f"rope type 'llama3' needs {', '.join(llama3_keys)}")
    if float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor") or 1.0)) != 1.0:
        problems.append("partial rotary embeddings are not supported")
    if cfg.get("mlp_bias"):
        problems.append("mlp_bias=true is not supported")
    if mtype == "qwen3" and cfg.get("attention_bias"):
        problems.append("attention_bias with q/k norms is not supported")
    if mtype in ("qwen2", "qwen3") and cfg.get("use_sliding_window"):
        problems.append("use_sliding_window=true is not supported")
    if any(t != "full_attention" for t in cfg.get("layer_types") or []):
        problems.append("layers with sliding-window attention are not supported")
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
