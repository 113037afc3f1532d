"""The style half of federated personalization: users' LoRA style adapters averaged into a
population style adapter that new users' style training starts from.

A user's style adapter (`companion train personalization` with enough of their writing, see
`models.training.personalization`) lives in their personalization model's `adapter/`. An
instance takes part with every such adapter whose recorded base weights match the
federation's base and whose tensors have the federation's names and shapes; it sends their mean
minus nothing else. The server averages the instances' means, each weighed by how many users'
adapters it holds (equally when noise is on), A and B matrices separately as FedIT does (Zhang
et al. 2024, "Towards Building the Federated GPT: Federated Instruction Tuning", ICASSP).

The server starts from the target model's own population adapter when it has one, else from a
fresh adapter built exactly as a user's adapter starts (`STYLE_LORA` on the base, seed 0), so the
users' A matrices and the population's share an origin.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import DataError, TrainingError

__all__ = [
    "STYLE_SEED",
    "StyleShape",
    "initial_style",
    "local_style_adapters",
    "style_update",
    "write_style_adapter",
]

#: Users' adapters are trained from this seed by default (`train_personalization(seed=0)`).
STYLE_SEED = 0
_CONFIG_KEY = "style_adapter"


@dataclass
class StyleShape:
    """What the federation's style arrays are: tensor names (sorted), shapes and base."""

    names: list[str]
    shapes: list[tuple[int, ...]]
    base_model: str
    base_sha256: str
    config: dict[str, Any]

    def to_fit_config(self) -> dict[str, str]:
        """Flower fit-config entries (scalars only): names, shapes and base as one JSON string."""
        info = {"names": self.names, "shapes": [list(s) for s in self.shapes], "base_sha256": self.base_sha256}
        return {_CONFIG_KEY: json.dumps(info)}

    @classmethod
    def from_fit_config(cls, config: Mapping[str, Any]) -> StyleShape | None:
        raw = config.get(_CONFIG_KEY)
        if not raw:
            return None
        info = json.loads(str(raw))
        return cls(list(info["names"]), [tuple(s) for s in info["shapes"]], "", str(info["base_sha256"]), {})


def _read_adapter(folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    from models.adapters import ADAPTER_WEIGHTS, read_adapter_config

    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():
        raise DataError(f"{folder}: no {ADAPTER_WEIGHTS}")
    return read_adapter_config(folder), {k: np.asarray(v, np.float64) for k, v in load_file(weights).items()}


def _adapter_base_sha(folder: Path) -> str | None:
    """The base weights hash a personalization folder's adapter records (companion.json)."""
    try:
        meta = json.loads((folder / "companion.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    sha = (meta.get("adapter") or {}).get("base_sha256") if isinstance(meta, dict) else None
    return str(sha) if sha else None


def initial_style(base_ref: str, folder: Path | None = None) -> tuple[StyleShape, list[np.ndarray]]:
    """The federation's starting style adapter: `folder`'s own `adapter/` (a previous round's
    population adapter) when it is on `base_ref`'s weights, else a fresh one on `base_ref`."""
    from models.integrity import weights_sha256
    from models.model_manager import resolve_path

    ref = resolve_path(base_ref)
    if ref.folder is None:
        raise TrainingError(f"style adapter base {base_ref!r} is not a local model folder")
    sha = weights_sha256(Path(ref.folder))
    has_own = folder is not None and (folder / "adapter" / "adapter_config.json").exists()
    if folder is not None and has_own and _adapter_base_sha(folder) == sha:
        config, tensors = _read_adapter(folder / "adapter")
    else:
        config, tensors = _fresh_adapter(base_ref, Path(ref.folder))
    names = sorted(tensors)
    shape = StyleShape(names, [tuple(tensors[n].shape) for n in names], base_ref, sha, config)
    return shape, [tensors[n].copy() for n in names]


def _fresh_adapter(base_ref: str, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    import torch
    from peft import get_peft_model_state_dict

    from models.training.lora import attach_lora
    from models.training.personality import load_for_training
    from models.training.personalization import STYLE_LORA

    torch.manual_seed(STYLE_SEED)  # the same start as a user's adapter (`_train_style`)
    model = attach_lora(load_for_training(folder), STYLE_LORA, base_ref)
    state = get_peft_model_state_dict(model)
    config = model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = base_ref
    config["target_modules"] = sorted(config.get("target_modules") or [])
    return json.loads(json.dumps(config, default=str)), {
        k: v.detach().to(torch.float64).numpy() for k, v in state.items()
    }


def local_style_adapters(base_sha256: str) -> list[dict[str, np.ndarray]]:
    """Every user's style adapter on this instance trained on the base with these weights: the
    latest version of each personalization model trained on a user's own data (not a
    population model a federation published)."""
    from models.store import ModelStore

    store = ModelStore()
    found = []
    for category, name in store.list_models("personalization"):
        folder = store.open(category, name)
        if not (folder / "adapter" / "adapter_config.json").exists() or _adapter_base_sha(folder) != base_sha256:
            continue
        try:
            lineage = json.loads((folder / "version.json").read_text(encoding="utf-8")).get("lineage") or {}
        except (OSError, json.JSONDecodeError):
            continue
        if lineage.get("recipe") != "personalization" or not lineage.get("contains_user_data"):
            continue
        found.append(_read_adapter(folder / "adapter")[1])
    return found


def style_update(
    shape: StyleShape, current: Sequence[np.ndarray], adapters: Sequence[Mapping[str, np.ndarray]]
) -> tuple[list[np.ndarray], int]:
    """The mean of the adapters that match `shape` (the same tensor names and shapes), and how
    many did. With none, the current population adapter unchanged and 0."""
    usable = [
        a
        for a in adapters
        if all(n in a and tuple(a[n].shape) == s for n, s in zip(shape.names, shape.shapes, strict=True))
    ]
    if not usable:
        return [np.asarray(c, np.float64).copy() for c in current], 0
    return [np.mean([np.asarray(a[n], np.float64) for a in usable], axis=0) for n in shape.names], len(usable)


def write_style_adapter(folder: Path, shape: StyleShape, arrays: Sequence[np.ndarray]) -> Path:
    """The population adapter in PEFT's format (float32 safetensors and its config)."""
    from safetensors.numpy import save_file

    from models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS
    from models.fileio import atomic_write_json
    from models.training.lora import write_adapter_card

    if len(arrays) != len(shape.names):
        raise DataError(f"style adapter: expected {len(shape.names)} arrays, got {len(arrays)}")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(shape.names, arrays, strict=True)}
    save_file(tensors, str(folder / ADAPTER_WEIGHTS))
    config = dict(shape.config) | {"base_model_name_or_path": shape.base_model}
    atomic_write_json(folder / ADAPTER_CONFIG, config)
    write_adapter_card(folder, config)
    return folder
