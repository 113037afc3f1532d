"""Publishing a federation's outcome: the target personalization model's prior read before
the rounds, and the new version written after (the population learner, the population style
adapter when one was federated, and the federation's record in the lineage)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.errors import TrainingError
from models.personalization.learner import PreferenceLearner
from models.training.federated import SHARED, FederatedResult

__all__ = ["publish_federated", "read_target"]


def read_target(model: str, user: str | None) -> tuple[Any, str, PreferenceLearner, Any, dict[str, Any], Path]:
    from models.model_manager import ModelManager
    from models.personalization.model import read_personalization_folder
    from models.training.publish import resolve_target

    vc, name = resolve_target(model, "personalization", user, "federate")
    served = ModelManager().resolve("personalization", name)
    if served.folder is None:
        raise TrainingError(f"personalization/{name} has no folder to read its prior from")
    prefs, prior, meta = read_personalization_folder(served.folder)
    return vc, name, prior, prefs, meta, Path(served.folder)


def publish_federated(
    vc: Any, name: str, result: FederatedResult, prefs: Any, meta: dict[str, Any], folder: Path | None = None
) -> str:
    import shutil

    from models.personalization.model import write_personalization_folder
    from models.training.federated_style import write_style_adapter
    from models.training.publish import publish_version, run_folder

    info = result.to_json()
    shared = list(SHARED) + (["style adapter (LoRA A and B)"] if result.style is not None else [])
    lineage = {
        "recipe": "federated",
        "framework": "flwr",
        "strategy": "FedAvg" + (" + client-side clipping, central Gaussian noise" if result.noise_multiplier else ""),
        "rounds": result.rounds, "clients": result.clients, "shared": shared,
        "differential_privacy": {k: info[k] for k in ("noise_multiplier", "clipping_norm", "delta", "epsilon")},
        "style_adapter": info["style_adapter"],
        "previous": meta.get("version"),
        "data_subjects": [],
    }  # fmt: skip
    metrics = {"epsilon": info["epsilon"], "rounds": result.rounds, "clients": result.clients}
    extra: dict[str, Any] = {k: meta[k] for k in ("description",) if k in meta}
    # A round that averaged no one's adapter (and no noise) gives no population style: the
    # previous version's adapter, if any, is carried over unchanged.
    new_style = result.style is not None and result.style_shape is not None
    new_style = new_style and bool(result.noise_multiplier or result.style_users)
    carried = folder / "adapter" if folder is not None and not new_style else None
    if new_style:
        assert result.style_shape is not None
        extra["style_base"] = result.style_shape.base_model
        extra["adapter"] = {"path": "adapter", "base_model": result.style_shape.base_model,
                            "base_sha256": result.style_shape.base_sha256}  # fmt: skip
    elif carried is not None and carried.is_dir() and meta.get("adapter"):
        extra |= {k: meta[k] for k in ("style_base", "adapter") if k in meta}
    else:
        carried = None

    def write(stage: Path) -> None:
        if new_style:
            assert result.style is not None and result.style_shape is not None
            write_style_adapter(stage / "adapter", result.style_shape, result.style)
        elif carried is not None:
            shutil.copytree(carried, stage / "adapter")
        write_personalization_folder(stage, prefs, result.learner, extra, manifest=False)

    run_dir = run_folder(None, f"federated-{name}", resume=False)
    why = f"federated prior: {result.rounds} rounds over {result.clients} instances, ε={info['epsilon']}"
    return publish_version(vc, f"personalization/{name}", run_dir, write, why, lineage, metrics)
