"""The shape of a Llama-family model, read from its `config.json`, and what the engine refuses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.errors import EngineError

__all__ = ["LlamaSpec", "rope_settings", "unsupported"]


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
        problems = unsupported(cfg)
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
            rope_theta=float(rope_settings(cfg).get("rope_theta", 10000.0)),
            max_positions=int(cfg.get("max_position_embeddings") or 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
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
    rope = rope_settings(cfg)
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
