"""ModelOptimizer: try real transforms of a model, measure them, publish the best as a version.

    optimizer = ModelOptimizer()
    result = optimizer.optimize_model(model_name="luna_personality",
                                      optimization_type="speed_accuracy_balance")
    result["improvement"]        # % better on the objective's metric, measured; 0.0 if nothing won
    result["candidates"]         # every candidate's measurements

**What it optimizes.** The model's generator: a transformer model itself, or a personality's
base model. **Candidates** (each measured, none assumed):

| candidate | what changes | publishable |
| --- | --- | --- |
| `current` | nothing: the engine the model is served with now (the baseline) | — |
| `fast-int8` | int8 dynamic quantization of every linear layer in the fast engine | yes |
| `fast-bf16` | bfloat16 weights in the fast engine | yes |
| `fast-threads-N` | N intra-op threads (1 and the core count) | yes |
| `hf`, `hf-int8` | `transformers` forward, plain and with `torch.ao` dynamic int8 Linear | no (config) |
| `onnxruntime` | ONNX Runtime | not implemented: listed as skipped, with the reason |

**Measurements**, the same for every candidate: greedy decode of `new_tokens` tokens after
each of the fixed `PROMPTS` through the engine's own prefill/step (the median of `rounds`
rounds, candidates interleaved so background load hits all alike) → process CPU ms per token and
prefill ms (`ModelOptimizer.timer`; CPU time, not wall time, so other processes' load on a
shared machine does not decide the winner);
held-out perplexity and next-token accuracy on the same text (`models.evaluation`); resident
weight bytes.

**Objectives** (`optimization_type`), among publishable candidates whose held-out perplexity
stays within the objective's budget of the baseline's:

| objective | metric (lower wins) | perplexity budget |
| --- | --- | --- |
| `speed_accuracy_balance` | ms per token | +2% |
| `speed` | ms per token | +10% |
| `size` | resident weight MB | +5% |
| `accuracy` | perplexity (no slower than 1.1× the baseline) | — |

`improvement` = (baseline − winner) / baseline × 100 on that metric. A winner must beat the
baseline by more than the noise margin (3%, or the round-to-round spread of the baseline or
the candidate if larger: median round over best round); otherwise the result says so,
`improvement` is 0.0 and nothing is published.
The winner is published through `ModelVersionControl.create_version` as a new version whose
folder holds the unchanged safetensors plus a `runtime` section in `companion.json` that the
fast engine applies at load (`models.engines.llama.runtime`); the notes and the version's `metrics`
carry the whole table.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from models.engines.hf import HFEngine
from models.engines.llama import FastEngine
from models.engines.llama.runtime import apply_runtime, int8_available, read_runtime, weight_bytes
from models.errors import CompanionError, EngineError
from models.evaluation import heldout_metrics, load_heldout
from models.integrity import write_manifest
from models.lifecycle.version_control import ModelVersionControl
from models.model_manager import ModelManager
from models.monitoring.monitor import ModelPerformanceMonitor

__all__ = ["OBJECTIVES", "PROMPTS", "ModelOptimizer", "OptimizationError"]

PROMPTS = (
    "The old lighthouse keeper looked out over the grey sea and said to his daughter",
    "Luna smiled and asked what the story was really about, and the writer",
    "Chapter One. The letter arrived on a wet Tuesday, and nobody in the village",
)


@dataclass(frozen=True)
class _Objective:
    metric: str
    ppl_budget: float | None
    speed_budget: float | None = None


OBJECTIVES: dict[str, _Objective] = {
    "speed_accuracy_balance": _Objective("ms_per_token", 0.02),
    "speed": _Objective("ms_per_token", 0.10),
    "size": _Objective("weight_mb", 0.05),
    "accuracy": _Objective("perplexity", None, speed_budget=1.10),
}
MIN_IMPROVEMENT = 3.0


class OptimizationError(CompanionError, ValueError):
    """An optimization could not run (bad objective, remote model, nothing measurable)."""


@dataclass
class _Candidate:
    name: str
    description: str
    build: Callable[[], Any] | None
    runtime: dict[str, Any] | None
    note: str = ""
    engine: Any = None
    rounds_s: list[float] | None = None
    prefill_s: float = float("inf")


class ModelOptimizer:
    """Measures candidate transforms of a model and publishes the best for an objective."""

    #: Process CPU time: on a shared machine wall time swings with other processes' load
    #: (measured here: 130% between rounds), CPU time spent on the work barely does. A
    #: multi-threaded candidate pays for every thread it keeps busy, spinning included.
    timer = staticmethod(time.process_time)

    def __init__(
        self,
        manager: Any = None,
        *,
        heldout: str | Path | None = None,
        prompts: tuple[str, ...] = PROMPTS,
        new_tokens: int = 48,
        rounds: int = 5,
        max_eval_tokens: int = 4000,
    ) -> None:
        if new_tokens < 1 or rounds < 1 or max_eval_tokens < 1 or not prompts:
            raise OptimizationError("new_tokens, rounds and max_eval_tokens must be >= 1, and prompts non-empty")
        self._manager = manager
        self.heldout = heldout
        self.prompts = tuple(prompts)
        self.new_tokens = new_tokens
        self.rounds = rounds
        self.max_eval_tokens = max_eval_tokens

    @property
    def manager(self) -> Any:
        if self._manager is None:
            self._manager = ModelManager()
        return self._manager

    # --- the public call -------------------------------------------------------------------

    def optimize_model(
        self,
        model_name: str,
        optimization_type: str = "speed_accuracy_balance",
        *,
        category: str | None = None,
        publish: bool = True,
    ) -> dict[str, Any]:
        """Measure every candidate, pick by `optimization_type`, publish the winner (see module doc)."""
        objective = OBJECTIVES.get(optimization_type)
        if objective is None:
            raise OptimizationError(f"optimization_type {optimization_type!r} is not one of {', '.join(OBJECTIVES)}")

        category, name = ModelPerformanceMonitor(self.manager).resolve(model_name, category)
        model = self.manager.load_model(category, name)
        generator = model if hasattr(model, "engine") else getattr(model, "base", None)
        engine = getattr(generator, "engine", None)
        folder = getattr(getattr(generator, "ref", None), "folder", None)
        if engine is None or folder is None or not hasattr(engine, "step"):
            raise OptimizationError(
                f"{category}/{name} is served by a remote or unknown engine: only local models can be optimized"
            )
        t0 = time.perf_counter()
        candidates = self._candidates(engine, Path(folder))
        rows = self._measure_all(candidates)
        chosen, improvement, noise = self._choose(rows, objective)
        result: dict[str, Any] = {
            "model": f"{category}/{name}",
            "optimization_type": optimization_type,
            "metric": objective.metric,
            "baseline": rows[0],
            "candidates": rows,
            "chosen": chosen["name"] if chosen else None,
            "improvement": round(improvement, 2) if chosen else 0.0,
            "noise_margin": round(noise, 2),
            "published_version": None,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if chosen is None:
            result["summary"] = (
                f"nothing beats the current {category}/{name} on {objective.metric} by more than "
                f"{noise:.1f}% within the objective's budget; nothing published"
            )
            return result
        result["summary"] = self._describe(chosen, rows[0], objective, improvement)
        if publish:
            runtime = next(c.runtime for c in candidates if c.name == chosen["name"])
            info = self._publish(category, name, model, Path(folder), runtime or {}, result)
            result["published_version"] = info.version
            result["summary"] += f"; published as {category}/{name} {info.version}"
        else:
            result["summary"] += "; not published (dry run)"
        return result

    # --- candidates ------------------------------------------------------------------------

    def _candidates(self, engine: Any, folder: Path) -> list[_Candidate]:
        """What to measure: the model as served, the fast engine's variants (or why there are
        none), the transformers engine with and without int8, and ONNX Runtime."""
        out = [_Candidate("current", f"as served now ({engine.name})", None, None, engine=engine)]
        if FastEngine.supports(folder):
            out += _fast_candidates(engine, folder)
        else:
            out.append(
                _Candidate("fast", "fast engine", None, None, note="not a Llama model: the fast engine cannot run it")
            )
        out.append(
            _Candidate(
                "hf",
                "transformers forward",
                lambda: _hf(folder, False),
                None,
                note="engine choice is config (parameters.engine), not a version",
            )
        )
        out.append(
            _Candidate(
                "hf-int8",
                "transformers + torch.ao dynamic int8 Linear",
                lambda: _hf(folder, True),
                None,
                note="the hf engine has no runtime hook to publish this",
            )
        )
        out.append(_Candidate("onnxruntime", "ONNX Runtime", None, None, note=_onnx_note()))
        return out

    # --- measuring -------------------------------------------------------------------------

    def _measure_all(self, candidates: list[_Candidate]) -> list[dict[str, Any]]:

        _, docs = load_heldout(self.heldout)
        live = []
        for c in candidates:
            if c.engine is None and c.build is not None:
                try:
                    c.engine = c.build()
                except (EngineError, RuntimeError, OSError) as exc:
                    c.note = f"could not build: {exc}"
            if c.engine is not None:
                live.append(c)
        scores = {c.name: heldout_metrics(c.engine, docs, max_tokens=self.max_eval_tokens) for c in live}
        prompts = [live[0].engine.codec.encode(p, add_bos=True) for p in self.prompts]
        for c in live:  # warm up (first calls allocate caches)
            self._decode(c, prompts[:1], min(8, self.new_tokens))
        for _ in range(self.rounds):
            for c in live:
                total, prefill = self._decode(c, prompts, self.new_tokens)
                c.rounds_s = [*(c.rounds_s or []), total]
                c.prefill_s = min(c.prefill_s, prefill)
        rows = []
        n_tokens = self.new_tokens * len(prompts)
        for c in candidates:
            row: dict[str, Any] = {
                "name": c.name,
                "description": c.description,
                "runtime": c.runtime,
                "publishable": c.runtime is not None,
                "note": c.note or None,
            }
            if c.engine is not None and c in live:
                s = scores[c.name]
                times = sorted(c.rounds_s or [])
                best, median = times[0], times[len(times) // 2]
                row.update(
                    engine=c.engine.name,
                    ms_per_token=round(1000 * median / n_tokens, 4),
                    best_ms_per_token=round(1000 * best / n_tokens, 4),
                    tokens_per_second=round(n_tokens / median, 1),
                    prefill_ms=round(1000 * c.prefill_s / len(prompts), 3),
                    spread_pct=round(100 * (median - best) / best, 2),
                    weight_mb=round(weight_bytes(c.engine) / 1e6, 3),
                    perplexity=round(s["perplexity"], 4),
                    next_token_accuracy=round(100 * s["next_token_accuracy"], 2),
                    eval_tokens=s["tokens"],
                )
            rows.append(row)
        return rows

    def _decode(self, c: _Candidate, prompts: list[list[int]], n: int) -> tuple[float, float]:
        """Greedy decode of `n` tokens after each prompt; (decode seconds, prefill seconds)."""
        engine = c.engine
        decode = prefill = 0.0
        timer = self.timer
        with engine.lock, torch.inference_mode():
            logits = engine.prefill(prompts[0])  # untimed: bring this engine's weights back into cache
            for _ in range(min(4, n)):
                logits = engine.step(int(logits.argmax()))
            for ids in prompts:
                t0 = timer()
                logits = engine.prefill(ids)
                t1 = timer()
                for _ in range(n):
                    logits = engine.step(int(logits.argmax()))
                decode += timer() - t1
                prefill += t1 - t0
        return decode, prefill

    # --- choosing --------------------------------------------------------------------------

    @staticmethod
    def _choose(rows: list[dict[str, Any]], objective: _Objective) -> tuple[dict[str, Any] | None, float, float]:
        base = rows[0]
        base_noise = max(MIN_IMPROVEMENT, base.get("spread_pct") or 0.0)
        best, best_gain, noise = None, 0.0, base_noise
        for row in rows[1:]:
            if not row["publishable"] or "perplexity" not in row:
                row["eligible"] = False
                continue
            within = True
            if objective.ppl_budget is not None:
                within = row["perplexity"] <= base["perplexity"] * (1 + objective.ppl_budget)
            if objective.speed_budget is not None:
                within = within and row["ms_per_token"] <= base["ms_per_token"] * objective.speed_budget
            gain = 100 * (base[objective.metric] - row[objective.metric]) / base[objective.metric]
            row["improvement"] = round(gain, 2)
            row["eligible"] = within
            margin = max(base_noise, row.get("spread_pct") or 0.0)  # either side's round-to-round spread
            if within and gain > margin and gain > best_gain:
                best, best_gain, noise = row, gain, margin
        return best, best_gain, noise

    @staticmethod
    def _describe(row: dict[str, Any], base: dict[str, Any], objective: _Objective, gain: float) -> str:
        return (
            f"{row['name']}: {gain:.1f}% better {objective.metric} "
            f"({base[objective.metric]} → {row[objective.metric]}); decode {base['ms_per_token']} → "
            f"{row['ms_per_token']} ms/token, perplexity {base['perplexity']} → {row['perplexity']}, "
            f"weights {base['weight_mb']} → {row['weight_mb']} MB"
        )

    # --- publishing ------------------------------------------------------------------------

    def _publish(
        self, category: str, name: str, model: Any, gen_folder: Path, runtime: dict[str, Any], result: dict[str, Any]
    ) -> Any:

        served = self.manager.resolve(category, name).folder
        composite = served is not None and (Path(served) / "persona.json").exists() and not hasattr(model, "engine")
        with tempfile.TemporaryDirectory(prefix="companion-optimize-") as tmp:
            root = Path(tmp) / "model"
            if composite:  # a personality: its folder, with the optimized base inside it
                _copy(Path(served), root)
                base = root / "base"
                shutil.rmtree(base, ignore_errors=True)
                _copy(gen_folder, base)
                _update_json(root / "companion.json", {"base_model": "base"})
            else:
                base = root
                _copy(gen_folder, root)
            _update_json(base / "companion.json", {"runtime": runtime})
            if composite:
                write_manifest(base)
            notes = f"optimized for {result['optimization_type']}: {result['summary']}"
            return ModelVersionControl().create_version(
                name,
                version_notes=notes,
                category=category,
                source=root,
                lineage={"optimized_from": result["baseline"].get("name"), "optimizer": result["optimization_type"]},
                metrics={
                    "optimization": {
                        k: result[k]
                        for k in ("optimization_type", "metric", "chosen", "improvement", "noise_margin", "candidates")
                    }
                },
            )


def _copy(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("manifest.json", "version.json", ".*"))
    for path in dest.rglob("*"):  # store folders are read-only; the copy must be writable
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(dest, 0o755)


def _update_json(path: Path, changes: dict[str, Any]) -> None:
    meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"format": "companion-model/1"}
    meta.update(changes)
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _fast_candidates(engine: Any, folder: Path) -> list[_Candidate]:
    """The fast engine with int8 or bfloat16 weights (where the folder is float32 now) and at
    each thread count the served engine does not already use."""
    current = read_runtime(folder)

    def fast(change: dict[str, Any]) -> Callable[[], Any]:
        def build() -> Any:
            e = FastEngine(folder, threads=change.get("threads") or current.get("threads"))
            apply_runtime(e, {k: v for k, v in change.items() if k != "threads"}, threads_chosen=True)
            return e

        return build

    out = []
    if current.get("quantization") is None and int8_available():
        out.append(
            _Candidate(
                "fast-int8",
                "int8 dynamic quantization of the linear layers",
                fast({"quantization": "int8-dynamic"}),
                {**current, "quantization": "int8-dynamic"},
            )
        )
    if current.get("quantization") is None and current.get("dtype") != "bfloat16":
        out.append(
            _Candidate("fast-bf16", "bfloat16 weights", fast({"dtype": "bfloat16"}), {**current, "dtype": "bfloat16"})
        )
    for n in sorted({1, os.cpu_count() or 1}):
        if getattr(engine, "threads", None) != n or engine.name != "fast":
            change = {"threads": n}
            out.append(_Candidate(f"fast-threads-{n}", f"{n} intra-op thread(s)", fast(change), {**current, **change}))
    return out


def _hf(folder: Path, int8: bool) -> Any:
    from transformers.utils import logging as hf_logging

    quiet = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        engine = HFEngine(folder)
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
    if int8:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine.model = torch.ao.quantization.quantize_dynamic(engine.model, {torch.nn.Linear}, dtype=torch.qint8)
    return engine


def _onnx_note() -> str:
    import importlib.util

    installed = importlib.util.find_spec("onnxruntime") is not None
    return (
        "skipped: exporting the KV-cached decode step to ONNX is not implemented "
        f"(onnxruntime {'installed' if installed else 'not installed'})"
    )
