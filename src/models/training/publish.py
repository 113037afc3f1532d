"""What every recipe shares around its own training: the target, the run folder, publishing.

A recipe is three steps (`plan`, `fit`, then `publish_version` here): the plan resolves the
model, checks the caller may train it and validates config and data before any weights load;
the fit trains and measures in the run folder; publishing stages the new version's folder,
copies the run's report and loss curve into its `training/`, and hands it to
`ModelVersionControl.create_version` (which verifies and registers it atomically). Nothing is
published when anything before fails.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.errors import TrainingError
from models.home import companion_home
from models.lifecycle.version_control import ModelVersionControl
from models.security import require

__all__ = ["check_epochs", "publish_version", "resolve_target", "run_folder"]


def check_epochs(epochs: Any) -> int:
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise TrainingError(f"epochs must be a positive whole number, not {epochs!r}")
    return epochs


def resolve_target(model_name: str, category: str, user: str | None, recipe: str) -> tuple[Any, str]:
    """The version control for `user` and the model's name, once `user` may train it."""

    vc = ModelVersionControl(user=user)
    found, name = vc.resolve_model(model_name, category if "/" not in model_name else None)
    if found != category:
        raise TrainingError(f"{model_name!r} is a {found} model; {recipe} needs a {category} model")
    require(user, f"{category}/{name}", "train", action="train")
    return vc, name


def run_folder(output_dir: str | Path | None, default: str, resume: bool) -> Path:
    """The run's folder (`COMPANION_HOME/runs/<default>` unless given), emptied unless resuming."""

    run_dir = Path(output_dir) if output_dir else companion_home() / "runs" / default
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def publish_version(
    vc: Any,
    model: str,
    run_dir: Path,
    write: Callable[[Path], None],
    why: str,
    lineage: dict[str, Any],
    metrics: dict[str, Any],
) -> str:
    """Stage the version (`write(stage)` fills the folder), add the run's training record, and
    create it; the new version's number."""
    stage = run_dir / "publish"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    try:
        write(stage)
        (stage / "training").mkdir(exist_ok=True)
        for item in ("report.json", "loss_curve.png"):
            if (run_dir / item).exists():
                shutil.copy2(run_dir / item, stage / "training" / item)
        info = vc.create_version(model, why, source=stage, lineage=lineage, metrics=metrics)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return str(info.version)
