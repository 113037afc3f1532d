"""LoRA adapters: attach them for training (through `peft`) and merge them at load time (without it).

Adapters are saved in PEFT's own format, so any PEFT user can load ours and we can load theirs::

    adapter/adapter_config.json        peft_type LORA, r, lora_alpha, target_modules, ...
    adapter/adapter_model.safetensors  base_model.model.<module>.lora_A.weight / .lora_B.weight

Inference does not need `peft`: `merge_lora` folds `W += (alpha / r) * B @ A` (or
`alpha / sqrt(r)` with rsLoRA) into a copy of the base weights once, at load, so an adapted
model decodes exactly as fast as its base. Adapter variants that cannot be folded that way
(DoRA, fan-in/fan-out layouts, bias training) are refused with a clear error rather than
loaded wrong. Format facts: PEFT's `LoraConfig` and `get_peft_model_state_dict`
(huggingface/peft, `tuners/lora/config.py`, `utils/save_and_load.py`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.errors import AdapterError

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "LoraSettings",
    "attach_lora",
    "merge_lora",
    "read_adapter_config",
    "save_adapter",
    "write_adapter_card",
]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Every linear layer of a Llama block: attention and MLP.
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<which>[AB])(?:\.[A-Za-z0-9_]+)?\.weight$")


@dataclass
class LoraSettings:
    """What `attach_lora` builds. Defaults fit the embedded model's 256-wide layers."""

    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    target_modules: tuple[str, ...] = LLAMA_TARGETS
    use_rslora: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        if self.r < 1:
            raise AdapterError(f"LoRA rank r must be at least 1, not {self.r}")
        if self.alpha <= 0:
            raise AdapterError(f"lora_alpha must be positive, not {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise AdapterError(f"LoRA dropout must be in [0, 1), not {self.dropout}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"target_modules": list(self.target_modules)}


def attach_lora(model: torch.nn.Module, settings: LoraSettings, base_ref: str) -> Any:
    """Wrap `model` in a PEFT LoRA model (only the adapter trains). `save_adapter` records
    `base_ref` as the adapter's `base_model_name_or_path`."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:  # a declared dependency; say so plainly if it's gone
        raise AdapterError("LoRA training needs `peft` (pip install peft)") from exc
    settings.check()
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in settings.target_modules if t not in present]
    if missing:
        raise AdapterError(f"the base model has no module(s) {missing} to adapt (it has e.g. {sorted(present)[:8]})")
    cfg = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        use_rslora=settings.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)


def save_adapter(peft_model: Any, folder: Path, base_ref: str) -> Path:
    """Save the adapter in PEFT format (`adapter_config.json` + `adapter_model.safetensors`)."""
    folder.mkdir(parents=True, exist_ok=True)
    # Embeddings are never targeted: skip peft's check for a changed vocabulary (a Hub look-up).
    peft_model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    cfg_path = folder / ADAPTER_CONFIG
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_ref
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for stray in folder.glob("*.bin"):  # never ship a pickle, whatever the peft version writes
        stray.unlink()
    write_adapter_card(folder, cfg)
    return folder


def write_adapter_card(folder: Path, cfg: Mapping[str, Any]) -> None:
    """A short model card in place of peft's template (which also records a local absolute path)."""
    card = f"""---
base_model: {cfg.get("base_model_name_or_path")}
library_name: peft
tags: [lora, companion-models]
---

# LoRA adapter

Trained by Companion Models (`companion train personality` / `personalization`). Rank
{cfg.get("r")}, alpha {cfg.get("lora_alpha")}, on {", ".join(sorted(cfg.get("target_modules") or []))}.
The training report, data hash and metrics are in the model folder's `training/report.json`
and `version.json`. Load it with `peft.PeftModel.from_pretrained(base, this_folder)`, or let
Companion Models fold it into the base at load.
"""
    (folder / "README.md").write_text(card)


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
