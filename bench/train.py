"""Training throughput: our loop (`models.training.loop.train`) vs a plain PyTorch loop.

Same model (the embedded model's shape, same random init), same data (token windows of the
shipped writing samples, encoded by the embedded tokenizer), same batch (16 x 256 tokens),
same optimizer (AdamW, weight decay on matrices), schedule, gradient clipping and loss. Rounds
alternate peer and ours so machine noise hits both; each side's best round counts.

Ours is measured two ways: **steady** (the loop's own tokens/s over its training steps, what the
progress bar shows) and **end to end** (wall time of `train()` including its one held-out
evaluation and the final safetensors checkpoint, work the plain loop does not do).
Target (DESIGN §10): steady ≥ 0.95× the plain loop.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STEPS = int(os.environ.get("BENCH_TRAIN_STEPS", "8"))
ROUNDS = int(os.environ.get("BENCH_TRAIN_ROUNDS", "3"))
THREADS = int(os.environ.get("BENCH_THREADS", "1"))
SEQ, BATCH = 256, 16


def _data() -> tuple[np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    from models.paths import builtin_dir
    from models.training_data.locations import shipped_dir

    tok = Tokenizer.from_file(str(builtin_dir("companion-base") / "tokenizer.json"))
    texts = [p.read_text(encoding="utf-8") for p in sorted(shipped_dir("writing_samples").rglob("*.md"))]
    ids = np.concatenate([np.asarray(e.ids, dtype=np.uint16) for e in tok.encode_batch(texts)])
    ids = np.tile(ids, max(1, (SEQ * BATCH * 4) // len(ids) + 1))
    cut = int(len(ids) * 0.9)
    return ids[:cut], ids[cut:]


def _model() -> torch.nn.Module:
    from transformers import LlamaForCausalLM

    from models.training.base import BaseModelSpec

    torch.manual_seed(0)
    ids = {"bos": 1, "eos": 2, "pad": 0, "end": 3}
    return LlamaForCausalLM(BaseModelSpec().llama_config(ids))


def _settings(steps: int) -> object:
    from models.training.loop import TrainSettings

    return TrainSettings(
        max_steps=steps, batch_size=BATCH, micro_batch_size=BATCH, lr=2e-3, warmup_steps=2, eval_every=10**9,
        checkpoint_every=10**9, log_every=1, seed=1, mixed_precision="no",
    )  # fmt: skip


def plain_loop(model: torch.nn.Module, source: object, steps: int) -> float:
    """The peer: the textbook loop. Returns tokens/s over `steps` steps (after one warm-up step)."""
    from models.training.loop import _lr_lambda, _make_optimizer

    s = _settings(steps + 1)
    opt = _make_optimizer(model, s)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(s))
    model.train()
    tokens, t0 = 0, 0.0
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        batch = source.global_batch(step, BATCH)
        logits = model(input_ids=batch["input_ids"]).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), batch["labels"][:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step >= 1:
            tokens += batch["input_ids"].numel()
    return tokens / (time.perf_counter() - t0)


def our_loop(model: torch.nn.Module, source: object, steps: int, out: Path) -> tuple[float, float]:
    """Ours: (steady tokens/s from the loop's own log, end-to-end tokens/s incl. eval + checkpoint)."""
    from models.training.loop import train

    t0 = time.perf_counter()
    result = train(model, source, _settings(steps + 1), out, progress=False)
    wall = time.perf_counter() - t0
    logged = [h for h in result.history if "tokens_per_s" in h]  # one entry per step (log_every=1)
    first, last = logged[0], logged[-1]  # after step 1 (the warm-up step, as for the peer) and the last step
    steady = (last["tokens"] - first["tokens"]) / (last["time_s"] - first["time_s"])
    return steady, result.tokens_seen / wall


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from models.training.corpus import TokenWindows

    torch.set_num_threads(THREADS)
    train_ids, held = _data()
    peer, ours, e2e = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(ROUNDS):
            peer.append(plain_loop(_model(), TokenWindows(train_ids, held, SEQ, seed=1), STEPS))
            steady, end = our_loop(_model(), TokenWindows(train_ids, held, SEQ, seed=1), STEPS, Path(tmp) / f"r{r}")
            ours.append(steady)
            e2e.append(end)
    best_peer, best_ours, best_e2e = max(peer), max(ours), max(e2e)
    table = Table(
        title=f"training throughput: 5.3 M Llama, {BATCH}x{SEQ} tokens/step, {STEPS} steps, {THREADS} thread(s)"
    )
    for col in ("loop", "tokens/s (best of rounds)", "rounds", "vs plain PyTorch"):
        table.add_column(col)
    fmt = lambda xs: ", ".join(f"{x:,.0f}" for x in xs)  # noqa: E731
    table.add_row("plain PyTorch loop (peer)", f"{best_peer:,.0f}", fmt(peer), "1.00×")
    table.add_row("ours, steady (training steps)", f"{best_ours:,.0f}", fmt(ours), f"{best_ours / best_peer:.2f}×")
    table.add_row("ours, end to end (+eval, +checkpoint)", f"{best_e2e:,.0f}", fmt(e2e), f"{best_e2e / best_peer:.2f}×")
    Console().print(table)
    verdict = "meets" if best_ours / best_peer >= 0.95 else "MISSES"
    print(f"steady throughput ratio {best_ours / best_peer:.3f}× {verdict} the ≥ 0.95× target")


if __name__ == "__main__":
    main()
