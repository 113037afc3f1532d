"""ModelOptimizer on the embedded model, and a re-measurement of what it claims (docs/operations.md).

In a temporary COMPANION_HOME: `optimize_model("companion-base", "speed_accuracy_balance")`
measures every candidate and publishes the winner as `base/companion-base` 1.0.0. Then, in
the same process, the benchmark loads the published version through `ModelManager` (as users
get it) and the original built-in model, and races their decode (same greedy loop, same
prompts, process CPU time as the optimizer measures it, interleaved rounds, median of each):
the re-measured improvement must agree with the reported one within the noise margin the
optimizer reported (at least 5 points).
"""

from __future__ import annotations

import os
import tempfile
import time

import torch
from rich.console import Console
from rich.table import Table

ROUNDS = 7


def _fmt(v: object) -> str:
    return "—" if v is None else f"{v:,.3f}" if isinstance(v, float) else str(v)


def _race(engines: dict[str, object], prompts: list[list[int]], n: int) -> dict[str, float]:
    """Median CPU ms per token of each engine over ROUNDS interleaved rounds (as the optimizer)."""
    times: dict[str, list[float]] = {label: [] for label in engines}
    for _ in range(ROUNDS):
        for label, engine in engines.items():
            with torch.inference_mode():
                logits = engine.prefill(prompts[0])  # untimed warm-up, as the optimizer does
                for _ in range(4):
                    logits = engine.step(int(logits.argmax()))
                total = 0.0
                for ids in prompts:
                    logits = engine.prefill(ids)
                    t0 = time.process_time()  # as the optimizer measures (ModelOptimizer.timer)
                    for _ in range(n):
                        logits = engine.step(int(logits.argmax()))
                    total += time.process_time() - t0
            times[label].append(1000 * total / (n * len(prompts)))
    return {label: sorted(t)[len(t) // 2] for label, t in times.items()}


def main() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    console = Console(width=140)
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as home:
        os.environ["COMPANION_HOME"] = home
        from models.engines.llama import FastEngine
        from models.model_manager import ModelManager
        from models.optimization import PROMPTS, ModelOptimizer
        from models.paths import builtin_dir

        optimizer = ModelOptimizer()
        result = optimizer.optimize_model("companion-base", optimization_type="speed_accuracy_balance")
        table = Table(
            title=f"{result['model']}: every candidate ({result['optimization_type']}, {result['seconds']} s)"
        )
        cols = (
            "candidate",
            "ms/token",
            "tok/s",
            "prefill ms",
            "weights MB",
            "perplexity",
            "next-token acc %",
            "spread %",
            "vs current %",
            "note",
        )
        for col in cols:
            table.add_column(col)
        for c in result["candidates"]:
            table.add_row(
                ("→ " if c["name"] == result["chosen"] else "") + c["name"],
                *(
                    _fmt(c.get(k))
                    for k in (
                        "ms_per_token",
                        "tokens_per_second",
                        "prefill_ms",
                        "weight_mb",
                        "perplexity",
                        "next_token_accuracy",
                        "spread_pct",
                        "improvement",
                    )
                ),
                c.get("note") or "",
            )
        console.print(table)
        console.print(result["summary"])
        console.print(f"reported improvement: {result['improvement']}% (noise margin {result['noise_margin']}%)")
        if result["published_version"] is None:
            return
        published = ModelManager().load_model("base", "companion-base")
        original = FastEngine(builtin_dir("companion-base"))
        prompts = [original.codec.encode(p, add_bos=True) for p in PROMPTS]
        best = _race({"original": original, "published": published.engine}, prompts, optimizer.new_tokens)
        again = 100 * (best["original"] - best["published"]) / best["original"]
        gap = abs(again - result["improvement"])
        verdict = "within" if gap <= max(result["noise_margin"], 5.0) else "OUTSIDE"
        console.print(
            f"re-measured: original {best['original']:.4f} ms/token, published "
            f"{result['model']} {result['published_version']} ({getattr(published.engine, 'runtime', {})}) "
            f"{best['published']:.4f} ms/token → {again:.1f}% better; reported {result['improvement']}%; "
            f"difference {gap:.1f} points ({verdict} noise)"
        )
