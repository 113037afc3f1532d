"""LoRA adapters in PEFT's format, folded into a model's weights at load (no `peft` needed).

An adapter folder holds `adapter_config.json` (peft_type LORA, r, lora_alpha, target_modules,
...) and `adapter_model.safetensors` (`base_model.model.<module>.lora_A.weight` / `.lora_B.weight`).
`merge_lora` folds `W += (alpha / r) * B @ A` (or `alpha / sqrt(r)` with rsLoRA) into a copy of
the base weights once, so an adapted model decodes exactly as fast as its base. Variants that
cannot be folded that way (DoRA, fan-in/fan-out layouts, bias training) are refused with a
clear error rather than loaded wrong. This is part of the model format: engines read it;
training (`models.training.lora`) writes it. Format facts: PEFT's `LoraConfig` and
`get_peft_model_state_dict` (huggingface/peft, `tuners/lora/config.py`, `utils/save_and_load.py`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import torch

from models.errors import AdapterError

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "merge_lora", "read_adapter_config"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    """The adapter's `adapter_config.json`, checked for what `merge_lora` can fold."""
    path = folder / ADAPTER_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise AdapterError(f"{folder}: not a PEFT adapter (no {ADAPTER_CONFIG})") from None
    except ValueError as exc:
        raise AdapterError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(cfg, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    if str(cfg.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(f"{path}: peft_type is {cfg.get('peft_type')!r}; only LORA adapters are supported")
    for key, bad in (("use_dora", True), ("fan_in_fan_out", True)):
        if cfg.get(key) == bad:
            raise AdapterError(f"{path}: {key}={bad} adapters cannot be merged by this loader")
    if cfg.get("bias", "none") != "none":
        raise AdapterError(f"{path}: bias={cfg['bias']!r}; only bias='none' adapters are supported")
    for key in ("r", "lora_alpha"):
        if not isinstance(cfg.get(key), int | float) or cfg[key] <= 0:
            raise AdapterError(f"{path}: {key} must be a positive number, got {cfg.get(key)!r}")
    return cfg


def _scale(cfg: Mapping[str, Any], module: str) -> float:
    r = cfg.get("rank_pattern", {}) or {}
    a = cfg.get("alpha_pattern", {}) or {}
    rank = next((v for k, v in r.items() if module.endswith(k)), cfg["r"])
    alpha = next((v for k, v in a.items() if module.endswith(k)), cfg["lora_alpha"])
    return alpha / math.sqrt(rank) if cfg.get("use_rslora") else alpha / rank


def merge_lora(tensors: MutableMapping[str, torch.Tensor], folder: Path) -> dict[str, Any]:
    """Fold the adapter in `folder` into `tensors` (a model's state dict, by HF names).

    Replaces each adapted `<module>.weight` with a new tensor `W + scale * B @ A`; never
    writes into the given tensors (they may be memory-mapped files). Raises `AdapterError`
    when the adapter does not fit: a module the model lacks, or a shape that differs (an
    adapter trained for another base model). Returns a summary (modules merged, rank).
    """
    from safetensors.torch import load_file

    cfg = read_adapter_config(folder)
    weights_path = folder / ADAPTER_WEIGHTS
    if not weights_path.exists():
        raise AdapterError(f"{folder}: no {ADAPTER_WEIGHTS} (adapters load from safetensors only)")
    try:
        raw = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise AdapterError(f"{weights_path}: unreadable ({exc})") from None
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in raw.items():
        m = _KEY.match(key)
        if m is None:
            raise AdapterError(f"{weights_path}: unexpected tensor {key!r} (only lora_A/lora_B weights fold)")
        pairs.setdefault(m.group("module"), {})[m.group("which")] = t
    if not pairs:
        raise AdapterError(f"{weights_path}: holds no LoRA weights")
    merged = 0
    updates: dict[str, torch.Tensor] = {}
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise AdapterError(f"{weights_path}: {module} has lora_{next(iter(ab))} without its pair")
        name = f"{module}.weight"
        base = tensors.get(name)
        if base is None:
            raise AdapterError(
                f"adapter {folder} does not fit this base model: it adapts {module!r}, which the model lacks"
            )
        a, b = ab["A"].float(), ab["B"].float()
        if a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(base.shape):
            raise AdapterError(
                f"adapter {folder} does not fit this base model: {module} is {tuple(base.shape)}, the adapter's "
                f"B@A is {(b.shape[0], a.shape[1])} — it was trained for another base"
            )
        updates[name] = (base.float() + _scale(cfg, module) * (b @ a)).to(base.dtype)
        merged += 1
    tensors.update(updates)
    return {
        "modules": merged,
        "r": cfg["r"],
        "lora_alpha": cfg["lora_alpha"],
        "base": cfg.get("base_model_name_or_path"),
    }
