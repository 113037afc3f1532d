"""`companion train personality|personalization`: the recipes of `ModelTrainer` from the shell.

(`companion train base` lives in `companion.cli`; `train emotion|emotion-control` in
`companion.commands.personality`.) Every command ends with a summary table, or JSON with `--json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]


def _summary(title: str, result: Any, as_json: bool) -> None:
    from rich.table import Table

    from companion.cli import out

    data = result.to_json()
    if as_json:
        out.print_json(data={k: v for k, v in data.items() if k != "lineage"} | {"lineage": data["lineage"]})
        return
    m = result.metrics
    table = Table(title=title, show_header=False)
    table.add_row("model", f"{result.model} {result.version}" if result.version else f"{result.model} (not published)")
    table.add_row("method", result.method)
    table.add_row("run", result.stop_reason)
    for key, value in m.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    table.add_row("data sha256", str(result.lineage.get("data_sha256", ""))[:16] + "…")
    table.add_row("run folder", result.run_dir)
    if (Path(result.run_dir) / "loss_curve.png").exists():
        table.add_row("loss curve", str(Path(result.run_dir) / "loss_curve.png"))
    out.print(table)


def train_personality(
    model: Annotated[str, typer.Argument(help="The personality (luna, personality/luna, ...).")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="Training data: a path, a saved dataset or a data source name.")
    ] = "models/training_data/personality_data",
    epochs: Annotated[int, typer.Option(help="At most this many epochs (early stopping may end sooner).")] = 20,
    method: Annotated[str, typer.Option(help="lora (an adapter) or full (all weights).")] = "lora",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder (checkpoints, curve).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's checkpoint.")] = False,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate (default: 2e-3 LoRA, 1e-4 full).")] = None,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank r.")] = 16,
    no_publish: Annotated[bool, typer.Option("--no-publish", help="Train and report; publish no version.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Tune a personality on its character's lines and publish a new version."""
    from models.training import LoraSettings, ModelTrainer

    trainer = ModelTrainer(progress=not as_json, threads=threads)
    result = trainer.train_personality_model(
        model, data, epochs, method, output_dir=output, resume=resume, publish=not no_publish,
        lr=lr, lora=LoraSettings(r=rank, alpha=2.0 * rank),
    )  # fmt: skip
    _summary("personality trained", result, as_json)


def train_personalization(
    model: Annotated[str, typer.Argument(help="The user model (user_prefs, personalization/robin, ...).")],
    data: Annotated[
        str, typer.Option("--data", "-d", help="A user-data folder, or a user id whose feedback is in the database.")
    ] = "models/training_data/user_data",
    epochs: Annotated[int, typer.Option(help="At most this many passes over the feedback.")] = 50,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Run folder.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the style adapter from the run folder's checkpoint.")] = False,
    no_publish: Annotated[bool, typer.Option("--no-publish", help="Train and report; publish no version.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Fit a user's preference learner (and style adapter) and publish a new version."""
    from models.training import ModelTrainer

    trainer = ModelTrainer(progress=not as_json, threads=threads)
    result = trainer.train_personalization_model(
        model, data, epochs, output_dir=output, resume=resume, publish=not no_publish
    )
    _summary("personalization trained", result, as_json)


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add `train personality` and `train personalization`."""
    from companion.cli import handle_errors, train_app

    names = {c.name for c in train_app.registered_commands}
    if "personality" not in names:
        train_app.command("personality")(handle_errors(train_personality))
        train_app.command("personalization")(handle_errors(train_personalization))
