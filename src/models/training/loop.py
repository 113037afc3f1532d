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
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    out = Path(output_dir)
    mp = settings.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    accel = Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())
    world, rank = accel.num_processes, accel.process_index
    settings.check(world)
    set_seed(settings.seed)
    main = accel.is_main_process

    opt = _make_optimizer(model, settings)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(settings))
    model, opt = accel.prepare(model, opt)
    raw = accel.unwrap_model(model)

    ckpt, best_dir = out / "checkpoint", out / "best"
    history: list[dict[str, float]] = []
    start_step, tokens_seen, best, best_step, bad_evals, lr_scale = 0, 0, None, None, 0, 1.0
    elapsed_before = 0.0  # training time spent before a resume: the time budget covers the whole run
    if resume:
        if not (ckpt / "state.json").exists():
            raise TrainingError(f"--resume: no checkpoint in {ckpt}")
        meta = load_checkpoint(ckpt, raw, opt, sched)
        start_step, tokens_seen = meta["step"], meta["tokens_seen"]
        best, best_step, bad_evals = meta["best_eval_loss"], meta["best_step"], meta["bad_evals"]
        history, lr_scale = meta["history"], meta.get("lr_scale", 1.0)
        elapsed_before = float(meta.get("elapsed_s", 0.0))
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(asdict(settings), indent=1))

    per_proc = settings.batch_size // world
    n_micro = per_proc // settings.micro_batch_size
    t0 = time.monotonic() - elapsed_before
    stop_reason, stopped_early = "max_steps", False
    window_tokens, window_t = 0, time.monotonic()
    running: float | None = None

    def state(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "tokens_seen": tokens_seen,
            "elapsed_s": time.monotonic() - t0,
            "best_eval_loss": best,
            "best_step": best_step,
            "bad_evals": bad_evals,
            "history": history,
            "lr_scale": lr_scale,
        }

    budget = settings.max_minutes * 60 - elapsed_before if settings.max_minutes is not None else None
    bar = Progress(
        settings.max_steps, start_step, description, enabled=progress and main,
        budget_s=budget, early_stopping=settings.patience is not None,
    )  # fmt: skip
    model.train()
    step = start_step
    with bar:
        while step < settings.max_steps:
            batch = data.global_batch(step, settings.batch_size)
            n_tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
            if n_tokens == 0:
                raise TrainingError(f"step {step}: the batch has no target tokens")
            mine = {k: v[rank * per_proc : (rank + 1) * per_proc] for k, v in batch.items()}
            step_loss = 0.0
            for m in range(n_micro):
                sl = slice(m * settings.micro_batch_size, (m + 1) * settings.micro_batch_size)
                micro = {k: v[sl].to(accel.device) for k, v in mine.items()}
                ctx = accel.no_sync(model) if m < n_micro - 1 else contextlib.nullcontext()
                with ctx, accel.autocast():
                    loss_sum, _ = _loss_sum(model, micro)
                    # DDP averages gradients over processes: multiply by world to get a sum.
                    loss = loss_sum * world / n_tokens
                    accel.backward(loss)
                step_loss += float(loss_sum.detach())
            if settings.grad_clip:
                accel.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            sched.step()
            if lr_scale != 1.0:  # the schedule sets each step's rate afresh; the plateau cuts scale it
                for g in opt.param_groups:
                    g["lr"] *= lr_scale
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens_seen += int(batch["input_ids"].numel())
            window_tokens += int(batch["input_ids"].numel())
            if world > 1:
                t = torch.tensor([step_loss], device=accel.device)
                step_loss = float(accel.reduce(t, reduction="sum"))
            step_loss /= n_tokens
            running = step_loss if running is None else 0.9 * running + 0.1 * step_loss
            now = time.monotonic()
            tps = window_tokens / max(1e-9, now - window_t)
            bar.update(step, running, tps)
            if step % settings.log_every == 0 or step == settings.max_steps:
                history.append(
                    {
                        "step": step,
                        "tokens": tokens_seen,
                        "train_loss": running,
                        "lr": opt.param_groups[0]["lr"],
                        "tokens_per_s": tps,
                        "time_s": now - t0,
                    }
                )
                window_tokens, window_t = 0, now
            if step % settings.eval_every == 0 or step == settings.max_steps:
                ev = evaluate(model, data.eval_batches(), accel.device)
                history.append({"step": step, "tokens": tokens_seen, **ev})
                bar.note(f"eval loss {ev['eval_loss']:.3f} ppl {ev['eval_perplexity']:.1f}")
                if best is None or ev["eval_loss"] < best - settings.min_delta:
                    best, best_step, bad_evals = ev["eval_loss"], step, 0
                    if main:
                        save_checkpoint(best_dir, raw, opt, sched, state(step))
                else:
                    bad_evals += 1
                    if settings.plateau_factor is not None:
                        lr_scale *= settings.plateau_factor
                        bar.note(f"no improvement: learning rate x{lr_scale:g}")
                    if settings.patience is not None and bad_evals >= settings.patience:
                        stop_reason, stopped_early = (
                            f"early stop: no improvement in {bad_evals} evaluations (best at step {best_step})",
                            True,
                        )
                if on_eval is not None and on_eval(step, ev) and not stopped_early:
                    stop_reason, stopped_early = "stopped by the caller after an evaluation (pruned)", True
            out_of_time = settings.max_minutes is not None and (now - t0) > settings.max_minutes * 60
            if out_of_time and not stopped_early:
                stop_reason, stopped_early = f"time budget of {settings.max_minutes} min reached", True
            if main and (step % settings.checkpoint_every == 0 or stopped_early or step == settings.max_steps):
                save_checkpoint(ckpt, raw, opt, sched, state(step))
                if on_checkpoint:
                    on_checkpoint(ckpt)
            accel.wait_for_everyone()
            if stopped_early:
                break

    if best_dir.exists() and (best_dir / "model.safetensors").exists():
        load_weights(best_dir, raw)
    accel.wait_for_everyone()
    result = TrainResult(
        steps=step,
        tokens_seen=tokens_seen,
        wall_seconds=time.monotonic() - t0,
        train_loss=running,
        best_eval_loss=best,
        best_eval_perplexity=math.exp(best) if best is not None else None,
        best_step=best_step,
        stopped_early=stopped_early,
        stop_reason=stop_reason,
        history=history,
        output_dir=str(out),
    )
    if main:
        (out / "result.json").write_text(json.dumps(result.to_json(), indent=1))
        plot_loss_curve(history, out / "loss_curve.png", title=description)
    return result
