"""`companion tune personality NAME`: Optuna's search over a personality's LoRA settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

tune_app = typer.Typer(help="Search training settings (Optuna), publish the best as a version.", no_args_is_help=True)


def tune_personality(
    name: Annotated[str, typer.Argument(help="A personality (its card's lines are the data).")],
    trials: Annotated[int, typer.Option("--trials", "-t", help="Trials to run now (a study resumes).")] = 8,
    budget: Annotated[float | None, typer.Option("--budget", help="Minutes after which no trial starts.")] = None,
    epochs_max: Annotated[int, typer.Option("--epochs-max", help="Epochs are sampled from 1 to this.")] = 4,
    emotion_samples: Annotated[int, typer.Option(help="Replies per trial for emotion agreement.")] = 8,
    study: Annotated[str | None, typer.Option(help="Study name (default: tune-personality-NAME).")] = None,
    data: Annotated[Path | None, typer.Option(help="Training lines (default: the shipped character data).")] = None,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the chosen trial.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Tune LoRA rank, alpha, learning rate, epochs and rehearsal share by held-out perplexity and
    emotion agreement (a Pareto front); the study is kept in the project database and resumes."""
    from companion.cli import out
    from models.training.tune import TuneSettings
    from models.training.tune import tune_personality as tune

    if trials < 1 or epochs_max < 1:
        raise typer.BadParameter("--trials and --epochs-max are at least 1")
    settings = TuneSettings(trials=trials, budget_minutes=budget, epochs_max=epochs_max,
                            emotion_samples=emotion_samples, study=study)  # fmt: skip
    result = tune(name, str(data) if data else None, settings, progress=not as_json, publish=publish)
    if as_json:
        out.print_json(data=result.to_json())
        return
    from rich.table import Table

    table = Table(title=f"{result.study}: {len(result.trials)} trials ({result.pruned} pruned), Pareto front")
    for col in ("trial", "r", "alpha/r", "lr", "epochs", "rehearsal", "perplexity ×", "emotion agreement"):
        table.add_column(col)
    for t in result.pareto:
        p = t["params"]
        mark = " ←" if result.chosen and t["number"] == result.chosen["number"] else ""
        table.add_row(f"{t['number']}{mark}", str(p["r"]), f"{p['alpha_per_rank']:g}", f"{p['lr']:.2g}",
                      str(p["epochs"]), str(p["rehearsal"]), f"{t['perplexity_ratio']:.3f}",
                      f"{t['emotion_agreement']:.2f}")  # fmt: skip
    out.print(table)
    if result.version:
        out.print(f"published {name} {result.version} (trial {result.chosen['number']}; the study is in its lineage)")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `tune` group."""
    from companion.cli import handle_errors

    if not tune_app.registered_commands:
        tune_app.command("personality")(handle_errors(tune_personality))
    app.add_typer(tune_app, name="tune")
