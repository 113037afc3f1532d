"""What a training run shows and leaves behind: a Rich progress bar and a loss-curve PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Progress", "plot_loss_curve"]


class Progress:
    """A Rich progress bar with loss and tokens/s; silent when disabled or not a terminal."""

    def __init__(
        self,
        total: int,
        start: int,
        description: str,
        enabled: bool,
        *,
        budget_s: float | None = None,
        early_stopping: bool = False,
    ) -> None:
        self.enabled = enabled
        self.total, self.start, self.description = total, start, description
        self.budget_s = budget_s
        """Seconds of training left under `max_minutes` when the bar starts (None: no budget)."""
        self.early_stopping = early_stopping
        self._p: Any = None
        self._t0 = 0.0

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._p = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[tps]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[left]}"),
            )
            self._p.__enter__()
            self._task = self._p.add_task(
                self.description, total=self.total, completed=self.start, loss="-", tps="-", left=""
            )
        import time

        self._t0 = time.monotonic()
        return self

    def remaining(self, step: int, now: float) -> str:
        """What is left, honestly: the steps left at the rate so far, capped by the time budget;
        "at most" when early stopping or the budget may end the run sooner."""
        done, spent = step - self.start, now - self._t0
        if done <= 0 or spent <= 0:
            return ""
        left = (self.total - step) * spent / done
        capped = self.budget_s is not None and self.budget_s - spent < left
        if capped:
            left = max(0.0, self.budget_s - spent)  # type: ignore[operator]
        h, rest = divmod(int(left), 3600)
        text = f"{h}:{rest // 60:02d}:{rest % 60:02d}"
        if capped:
            return f"{text} left (time budget)"
        return f"at most {text} left (early stopping may end sooner)" if self.early_stopping else f"{text} left"

    def update(self, step: int, loss: float | None, tps: float) -> None:
        if self._p is not None:
            import time

            self._p.update(
                self._task,
                completed=step,
                loss=f"{loss:.3f}" if loss is not None else "-",
                tps=f"{tps:,.0f}",
                left=self.remaining(step, time.monotonic()),
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
