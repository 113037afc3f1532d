"""LoRA adapters: attach them for training (through `peft`) and merge them at load time (without it).

Adapters are saved in PEFT's own format, so any PEFT user can load ours and we can load theirs::

    adapter/adapter_config.json        peft_type LORA, r, lora_alpha, target_modules, ...
    adapter/adapter_model.safetensors  base_model.model.<module>.lora_A.weight / .lora_B.weight

Inference does not need `peft`: the engines fold adapters at load with `models.adapters`
(re-exported here); this module is the training side.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, merge_lora, read_adapter_config
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

#: Every linear layer of a Llama block: attention and MLP.
LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    with warnings.catch_warnings():
        # peft reads `model.is_gradient_checkpointing`, which transformers 5 deprecates with a
        # FutureWarning every user saw on every training run; the read is peft's, not ours.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
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
