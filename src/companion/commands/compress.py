"""`companion compress distill TEACHER --name NEW`: a smaller student trained on the teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]

compress_app = typer.Typer(help="Smaller models: distil a local chat model into a student.", no_args_is_help=True)


def distill(
    teacher: Annotated[str, typer.Argument(help="A local model (a name or CATEGORY/NAME) to learn from.")],
    name: Annotated[str, typer.Option("--name", help="The student: published as base/NAME.")],
    layers: Annotated[int | None, typer.Option("--layers", help="Student layers (default: half).")] = None,
    hidden: Annotated[int | None, typer.Option("--hidden", help="Student width (default: the teacher's).")] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="Prompts: one per line, or JSONL with messages.")
    ] = None,
    samples: Annotated[int, typer.Option("--samples", help="Teacher replies per prompt.")] = 2,
    steps: Annotated[int, typer.Option("--steps", help="Training steps (batches of 16).")] = 300,
    minutes: Annotated[float | None, typer.Option("--minutes", help="Stop training after this long.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the KL term (the rest: cross-entropy).")] = 0.5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    publish: Annotated[bool, typer.Option("--publish/--no-publish", help="Publish the student.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Train a smaller student on the teacher's own replies (sequence-level and logit KD) and
    print teacher against student: size, decoding speed, held-out perplexity."""
    from companion.cli import err, out
    from models.training.distill import DistillSettings
    from models.training.distill import distill as run

    settings = DistillSettings(layers=layers, hidden=hidden, samples_per_prompt=samples, steps=steps,
                               minutes=minutes, alpha=alpha, seed=seed)  # fmt: skip
    say = None if as_json else (lambda msg: err.print(f"[dim]{msg}[/]"))
    result = run(teacher, name, prompts=prompts, settings=settings, publish=publish, progress=say)
    if as_json:
        out.print_json(data=result.to_json())
        return
    from rich.table import Table

    table = Table(title=f"{teacher} → {result.name}: {result.steps} steps on {result.train_sequences} teacher replies")
    for col in ("model", "parameters", "size (MB)", "tokens/s", "held-out perplexity"):
        table.add_column(col)
    for row in result.table:
        table.add_row(row["model"], f"{row['parameters']:,}", f"{row['size_mb']:.1f}", f"{row['tokens_per_s']:.0f}",
                      f"{row['heldout_perplexity']:.2f}")  # fmt: skip
    out.print(table)
    if result.version:
        out.print(f"published base/{result.name} {result.version}: companion generate -m {result.name} ...")


def register(app: typer.Typer, models_app: typer.Typer) -> None:
    """Add the `compress` group."""
    from companion.cli import handle_errors

    if not compress_app.registered_commands:
        compress_app.command("distill")(handle_errors(distill))
    app.add_typer(compress_app, name="compress")
