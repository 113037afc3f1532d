"""Checkpoints of a training run: safetensors + JSON, written atomically, never pickled.

A checkpoint folder holds `model.safetensors` (trainable tensors, tied weights once),
`optimizer.safetensors` (AdamW moments, one tensor per parameter and moment), `rng.safetensors`
(the torch random generators' states, so dropout after a resume draws what it would have) and
`state.json` (step, scheduler state, learning rates, scalars and the run's bookkeeping). Writes go to a
staging sibling swapped in whole (`models.fileio.atomic_folder`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from models.errors import TrainingError
from models.fileio import atomic_folder

__all__ = ["load_checkpoint", "load_weights", "save_checkpoint"]


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Trainable tensors by name, detached and contiguous (tied weights stored once)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[name] = p.detach().contiguous().cpu().clone()
    return out


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
    state: dict[str, Any],
) -> None:
    """Write a checkpoint atomically (`fileio.atomic_folder`: a staging folder swapped in whole)."""
    with atomic_folder(folder) as tmp:
        save_file(_trainable_state(model), str(tmp / "model.safetensors"))
        names = {id(p): n for n, p in model.named_parameters()}
        tensors: dict[str, torch.Tensor] = {}
        scalars: dict[str, Any] = {}
        for group in opt.param_groups:
            for p in group["params"]:
                st = opt.state.get(p)
                if not st:
                    continue
                key = names[id(p)]
                for k, v in st.items():
                    if torch.is_tensor(v):
                        tensors[f"{key}::{k}"] = v.detach().contiguous().cpu().clone()
                    else:
                        scalars[f"{key}::{k}"] = v
        if tensors:
            save_file(tensors, str(tmp / "optimizer.safetensors"))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng |= {f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
        save_file(rng, str(tmp / "rng.safetensors"))
        meta = {
            "optimizer_scalars": scalars,
            "scheduler": sched.state_dict(),
            "lrs": [g["lr"] for g in opt.param_groups],
            **state,
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def load_weights(folder: Path, model: torch.nn.Module) -> None:
    """Copy a checkpoint's trainable tensors into `model` (in place, on the model's device)."""
    weights = load_file(str(folder / "model.safetensors"))
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise TrainingError(f"checkpoint {folder} does not fit this model (e.g. {missing[0]})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device))


def load_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LambdaLR,
) -> dict[str, Any]:
    """Restore weights, optimizer moments and schedule; returns the run's saved state."""
    load_weights(folder, model)
    meta = json.loads((folder / "state.json").read_text())
    moments = load_file(str(folder / "optimizer.safetensors")) if (folder / "optimizer.safetensors").exists() else {}
    by_name = {n: p for n, p in model.named_parameters()}
    for key, t in moments.items():
        name, k = key.split("::", 1)
        opt.state[by_name[name]][k] = t.to(by_name[name].device)
    for key, v in meta["optimizer_scalars"].items():
        name, k = key.split("::", 1)
        opt.state[by_name[name]][k] = v
    sched.load_state_dict(meta["scheduler"])
    for g, lr in zip(opt.param_groups, meta["lrs"], strict=True):
        g["lr"] = lr
    if (folder / "rng.safetensors").exists():
        rng = load_file(str(folder / "rng.safetensors"))
        torch.set_rng_state(rng["torch"])
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return meta
