"""What a training run shows and leaves behind: a Rich progress bar and a loss-curve PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Progress", "plot_loss_curve"]


class Progress:
    """A Rich progress bar with loss and tokens/s; silent when disabled or not a terminal."""

    def __init__(self, total: int, start: int, description: str, enabled: bool) -> None:
        self.enabled = enabled
        self.total, self.start, self.description = total, start, description
        self._p: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._p = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._p.__enter__()
            self._task = self._p.add_task(self.description, total=self.total, completed=self.start, loss="-", tps="-")
        return self

    def update(self, step: int, loss: float | None, tps: float) -> None:
        if self._p is not None:
            self._p.update(
                self._task, completed=step, loss=f"{loss:.3f}" if loss is not None else "-", tps=f"{tps:,.0f}"
            )

    def note(self, text: str) -> None:
        if self._p is not None:
            self._p.console.print(f"  {text}")

    def __exit__(self, *exc: object) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)


def plot_loss_curve(history: list[dict[str, float]], path: Path, title: str = "training") -> None:
    """Train and held-out loss against tokens seen, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_pts = [(h["tokens"], h["train_loss"]) for h in history if "train_loss" in h]
    eval_pts = [(h["tokens"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train_pts:
        ax.plot(*zip(*train_pts, strict=True), label="train loss (EMA)")
    if eval_pts:
        ax.plot(*zip(*eval_pts, strict=True), "o-", label="held-out loss")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
