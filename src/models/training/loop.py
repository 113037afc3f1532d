"""The one training loop, shared by every recipe (base LM, personality, personalization).

Built on `accelerate`, so the same code runs on one CPU, several GPUs or several machines
(`accelerate launch`). What it does, in order of a step:

* takes the step's global batch from a `BatchSource` (deterministic in `(seed, step)`, so a
  resumed run sees exactly the batches an uninterrupted one would);
* splits it into micro-batches (gradient accumulation) and across processes; each micro loss
  is weighted by its share of the global batch's target tokens, so 1 process and N processes
  with the same global batch compute the same gradient;
* clips the gradient, steps AdamW and a warm-up + cosine/linear schedule;
* every `eval_every` steps measures held-out loss/perplexity, keeps the best weights, and stops
  early after `patience` evaluations without improvement;
* every `checkpoint_every` steps (and at the end, or when the time budget runs out) writes a
  checkpoint of safetensors + JSON: model, optimizer moments, schedule, step. Nothing pickled.

Recipes own the model and data; this module owns only the loop.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from models.errors import TrainingError
from models.training.checkpoint import load_checkpoint, load_weights, save_checkpoint
from models.training.progress import Progress, plot_loss_curve

__all__ = ["BatchSource", "TrainResult", "TrainSettings", "train"]

IGNORE_INDEX = -100


@dataclass
class TrainSettings:
    """Settings of one run. Saved next to the checkpoints as `settings.json`."""

    max_steps: int = 1000
    """Optimizer steps at most (epochs are turned into steps by the recipe)."""
    batch_size: int = 16
    """Sequences per optimizer step, over all processes and accumulation steps."""
    micro_batch_size: int = 16
    """Sequences per forward pass on one process; batch_size must divide evenly."""
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    schedule: str = "cosine"
    """`cosine` or `linear` decay after warm-up."""
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    eval_every: int = 100
    patience: int | None = None
    """Stop after this many evaluations without improvement (None: never stop early)."""
    min_delta: float = 0.0
    plateau_factor: float | None = None
    """On an evaluation without improvement, multiply the learning rate by this (e.g. 0.5) on top
    of the schedule, before early stopping gives up (None: keep the schedule)."""
    checkpoint_every: int = 200
    seed: int = 1234
    max_minutes: float | None = None
    """Stop cleanly (with a checkpoint) after this much wall time."""
    mixed_precision: str = "auto"
    """`no`, `bf16`, `fp16`, or `auto` (bf16 on a GPU that has it, else full precision)."""
    log_every: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def capped(self, steps: int) -> TrainSettings:
        """These settings for a run of `steps` optimizer steps: warm-up, evaluation and
        checkpoint intervals shrink so that a short run still warms up, evaluates and saves."""
        return replace(
            self,
            max_steps=steps,
            warmup_steps=min(self.warmup_steps, max(1, steps // 10)),
            eval_every=min(self.eval_every, steps),
            checkpoint_every=min(self.checkpoint_every, steps),
        )

    def check(self, world_size: int = 1) -> None:
        if self.schedule not in ("cosine", "linear"):
            raise TrainingError(f"schedule must be 'cosine' or 'linear', not {self.schedule!r}")
        if self.max_steps < 1:
            raise TrainingError(f"max_steps must be at least 1, not {self.max_steps}")
        if self.plateau_factor is not None and not 0.0 < self.plateau_factor < 1.0:
            raise TrainingError(f"plateau_factor must be between 0 and 1, not {self.plateau_factor}")
        per_proc = self.batch_size / world_size
        if per_proc != int(per_proc) or int(per_proc) % self.micro_batch_size:
            raise TrainingError(
                f"batch_size {self.batch_size} must split evenly into {world_size} process(es) "
                f"x micro_batch_size {self.micro_batch_size}"
            )


class BatchSource(Protocol):
    """Where a run's data comes from. Both methods must be deterministic."""

    def global_batch(self, step: int, size: int) -> dict[str, torch.Tensor]:
        """The `size` sequences of optimizer step `step`: `input_ids` and `labels` (B, T)."""
        ...

    def eval_batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The held-out set, in fixed batches."""
        ...


@dataclass
class TrainResult:
    steps: int
    tokens_seen: int
    wall_seconds: float
    train_loss: float | None
    best_eval_loss: float | None
    best_eval_perplexity: float | None
    best_step: int | None
    stopped_early: bool
    stop_reason: str
    history: list[dict[str, float]]
    output_dir: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _lr_lambda(s: TrainSettings) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < s.warmup_steps:
            return (step + 1) / max(1, s.warmup_steps)
        span = max(1, s.max_steps - s.warmup_steps)
        progress = min(1.0, (step - s.warmup_steps) / span)
        if s.schedule == "cosine":
            decay = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            decay = 1.0 - progress
        return s.min_lr_ratio + (1.0 - s.min_lr_ratio) * decay

    return f


def _make_optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": s.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=s.lr, betas=s.betas, foreach=False)


# ----------------------------------------------------------------------------- the loop


def _loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over target tokens, and their count."""
    input_ids, labels = batch["input_ids"], batch["labels"]
    attn = batch.get("attention_mask")
    logits = model(input_ids=input_ids, attention_mask=attn).logits
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    loss = torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss, int((shift_labels != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterator[dict[str, torch.Tensor]], device: Any) -> dict[str, float]:
    """Held-out loss, perplexity and next-token accuracy."""
    was_training = model.training
    model.eval()
    total, count, correct = 0.0, 0, 0
    for b in batches:
        b = {k: v.to(device) for k, v in b.items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b.get("attention_mask")).logits
        sl = b["labels"][:, 1:]
        lg = logits[:, :-1, :].float()
        mask = sl != IGNORE_INDEX
        total += float(
            torch.nn.functional.cross_entropy(
                lg.reshape(-1, lg.size(-1)), sl.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
        )
        correct += int(((lg.argmax(-1) == sl) & mask).sum())
        count += int(mask.sum())
    if was_training:
        model.train()
    if count == 0:
        raise TrainingError("the held-out set has no target tokens")
    loss = total / count
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_accuracy": correct / count}


@dataclass
class _RunState:
    """What a checkpoint records besides the weights, optimizer and schedule: where the run
    is, its best evaluation so far, and the learning-rate cut the plateau rule applied."""

    step: int = 0
    tokens_seen: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    lr_scale: float = 1.0
    elapsed_before: float = 0.0
    """Training time spent before a resume: the time budget covers the whole run."""

    @classmethod
    def from_checkpoint(cls, meta: dict[str, Any]) -> _RunState:
        return cls(
            meta["step"], meta["tokens_seen"], meta["best_eval_loss"], meta["best_step"], meta["bad_evals"],
            meta["history"], meta.get("lr_scale", 1.0), float(meta.get("elapsed_s", 0.0)),
        )  # fmt: skip

    def state(self, elapsed: float) -> dict[str, Any]:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "elapsed_s": elapsed,
            "best_eval_loss": self.best,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "history": self.history,
            "lr_scale": self.lr_scale,
        }


class _Run:
    """One call of `train`: the accelerator, the prepared model and optimizer, and the steps."""

    def __init__(self, model: torch.nn.Module, data: BatchSource, settings: TrainSettings, out: Path) -> None:
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        mp = settings.mixed_precision
        if mp == "auto":
            mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
        self.accel = accel = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
        self.world, self.rank = accel.num_processes, accel.process_index
        settings.check(self.world)
        set_seed(settings.seed)
        self.main = accel.is_main_process
        self.data, self.s, self.out = data, settings, out
        opt = _make_optimizer(model, settings)
        self.sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(settings))
        self.model, self.opt = accel.prepare(model, opt)
        self.raw = accel.unwrap_model(self.model)
        self.ckpt, self.best_dir = out / "checkpoint", out / "best"
        self.p = _RunState()
        self.per_proc = settings.batch_size // self.world
        self.n_micro = self.per_proc // settings.micro_batch_size
        self.t0 = time.monotonic()
        self.running: float | None = None
        self.window_tokens, self.window_t = 0, time.monotonic()

    def resume(self) -> None:
        if not (self.ckpt / "state.json").exists():
            raise TrainingError(f"--resume: no checkpoint in {self.ckpt}")
        self.p = _RunState.from_checkpoint(load_checkpoint(self.ckpt, self.raw, self.opt, self.sched))

    def start(self) -> None:
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "settings.json").write_text(json.dumps(asdict(self.s), indent=1))
        self.t0 = time.monotonic() - self.p.elapsed_before
        self.window_t = time.monotonic()
        self.model.train()

    def save(self, where: Path) -> None:
        save_checkpoint(where, self.raw, self.opt, self.sched, self.p.state(time.monotonic() - self.t0))

    def optimizer_step(self) -> float:
        """One optimizer step over the step's global batch (this process's share, in micro
        batches); the batch's mean loss per target token over all processes."""
        s, accel, model = self.s, self.accel, self.model
        batch = self.data.global_batch(self.p.step, s.batch_size)
        n_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        if n_tokens == 0:
            raise TrainingError(f"step {self.p.step}: the batch has no target tokens")
        mine = {k: v[self.rank * self.per_proc : (self.rank + 1) * self.per_proc] for k, v in batch.items()}
        step_loss = 0.0
        for m in range(self.n_micro):
            sl = slice(m * s.micro_batch_size, (m + 1) * s.micro_batch_size)
            micro = {k: v[sl].to(accel.device) for k, v in mine.items()}
            ctx = accel.no_sync(model) if m < self.n_micro - 1 else contextlib.nullcontext()
            with ctx, accel.autocast():
                loss_sum, _ = _loss_sum(model, micro)
                # DDP averages gradients over processes: multiply by world to get a sum.
                loss = loss_sum * self.world / n_tokens
                accel.backward(loss)
            step_loss += float(loss_sum.detach())
        if s.grad_clip:
            accel.clip_grad_norm_(model.parameters(), s.grad_clip)
        self.opt.step()
        self.sched.step()
        if self.p.lr_scale != 1.0:  # the schedule sets each step's rate afresh; the plateau cuts scale it
            for g in self.opt.param_groups:
                g["lr"] *= self.p.lr_scale
        self.opt.zero_grad(set_to_none=True)
        self.p.step += 1
        self.p.tokens_seen += int(batch["input_ids"].numel())
        self.window_tokens += int(batch["input_ids"].numel())
        if self.world > 1:
            t = torch.tensor([step_loss], device=accel.device)
            step_loss = float(accel.reduce(t, reduction="sum"))
        return step_loss / n_tokens

    def log(self, step_loss: float, bar: Progress, now: float) -> None:
        """The running loss and throughput on the bar, and every `log_every` steps in the history."""
        p = self.p
        self.running = step_loss if self.running is None else 0.9 * self.running + 0.1 * step_loss
        tps = self.window_tokens / max(1e-9, now - self.window_t)
        bar.update(p.step, self.running, tps)
        if p.step % self.s.log_every == 0 or p.step == self.s.max_steps:
            lr = self.opt.param_groups[0]["lr"]
            p.history.append(
                {"step": p.step, "tokens": p.tokens_seen, "train_loss": self.running, "lr": lr,
                 "tokens_per_s": tps, "time_s": now - self.t0}
            )  # fmt: skip
            self.window_tokens, self.window_t = 0, now

    def evaluate(self, bar: Progress, on_eval: Callable[[int, dict[str, float]], bool] | None) -> str | None:
        """Held-out loss: keep the best weights, cut the rate on a plateau; why to stop, if so."""
        p, s = self.p, self.s
        ev = evaluate(self.model, self.data.eval_batches(), self.accel.device)
        p.history.append({"step": p.step, "tokens": p.tokens_seen, **ev})
        bar.note(f"eval loss {ev['eval_loss']:.3f} ppl {ev['eval_perplexity']:.1f}")
        stop = None
        if p.best is None or ev["eval_loss"] < p.best - s.min_delta:
            p.best, p.best_step, p.bad_evals = ev["eval_loss"], p.step, 0
            if self.main:
                self.save(self.best_dir)
        else:
            p.bad_evals += 1
            if s.plateau_factor is not None:
                p.lr_scale *= s.plateau_factor
                bar.note(f"no improvement: learning rate x{p.lr_scale:g}")
            if s.patience is not None and p.bad_evals >= s.patience:
                stop = f"early stop: no improvement in {p.bad_evals} evaluations (best at step {p.best_step})"
        if on_eval is not None and on_eval(p.step, ev) and stop is None:
            stop = "stopped by the caller after an evaluation (pruned)"
        return stop

    def finish(self, stop_reason: str, stopped_early: bool, description: str) -> TrainResult:
        """Load the best weights; the run's result (written beside the checkpoints with its curve)."""
        if self.best_dir.exists() and (self.best_dir / "model.safetensors").exists():
            load_weights(self.best_dir, self.raw)
        self.accel.wait_for_everyone()
        p = self.p
        result = TrainResult(
            steps=p.step,
            tokens_seen=p.tokens_seen,
            wall_seconds=time.monotonic() - self.t0,
            train_loss=self.running,
            best_eval_loss=p.best,
            best_eval_perplexity=math.exp(p.best) if p.best is not None else None,
            best_step=p.best_step,
            stopped_early=stopped_early,
            stop_reason=stop_reason,
            history=p.history,
            output_dir=str(self.out),
        )
        if self.main:
            (self.out / "result.json").write_text(json.dumps(result.to_json(), indent=1))
            plot_loss_curve(p.history, self.out / "loss_curve.png", title=description)
        return result


def train(
    model: torch.nn.Module,
    data: BatchSource,
    settings: TrainSettings,
    output_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    description: str = "training",
    on_checkpoint: Callable[[Path], None] | None = None,
    on_eval: Callable[[int, dict[str, float]], bool] | None = None,
) -> TrainResult:
    """Train `model` in place; returns what happened. The best weights are loaded at the end.
    `on_eval(step, metrics)` sees each evaluation; returning True stops the run there (a tuner
    pruning a bad trial)."""
    s = settings
    run = _Run(model, data, s, Path(output_dir))
    if resume:
        run.resume()
    run.start()
    budget = s.max_minutes * 60 - run.p.elapsed_before if s.max_minutes is not None else None
    bar = Progress(
        s.max_steps, run.p.step, description, enabled=progress and run.main,
        budget_s=budget, early_stopping=s.patience is not None,
    )  # fmt: skip
    stop_reason, stopped_early = "max_steps", False
    with bar:
        while run.p.step < s.max_steps:
            step_loss = run.optimizer_step()
            now = time.monotonic()
            run.log(step_loss, bar, now)
            step = run.p.step
            if step % s.eval_every == 0 or step == s.max_steps:
                stop = run.evaluate(bar, on_eval)
                if stop is not None:
                    stop_reason, stopped_early = stop, True
            if s.max_minutes is not None and (now - run.t0) > s.max_minutes * 60 and not stopped_early:
                stop_reason, stopped_early = f"time budget of {s.max_minutes} min reached", True
            if run.main and (step % s.checkpoint_every == 0 or stopped_early or step == s.max_steps):
                run.save(run.ckpt)
                if on_checkpoint:
                    on_checkpoint(run.ckpt)
            run.accel.wait_for_everyone()
            if stopped_early:
                break
    return run.finish(stop_reason, stopped_early, description)
