"""The int8 fast engine, runtime sections, and ModelOptimizer's choice and publishing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.engines.base import SamplingParams
from models.engines.llama import FastEngine
from models.engines.llama.runtime import quantize_int8, read_runtime, weight_bytes
from models.errors import EngineError
from models.optimization import ModelOptimizer, OptimizationError

HELD = "The lighthouse keeper wrote a letter every evening, though no ship ever came to carry it. " * 8


def test_int8_engine_tracks_fp32_logits(tiny_model_dir: Path) -> None:
    fp32, int8 = FastEngine(tiny_model_dir), FastEngine(tiny_model_dir)
    quantize_int8(int8)
    ids = fp32.codec.encode("The lighthouse keeper wrote", add_bos=True)
    a, b = fp32.prefill(ids), int8.prefill(ids)
    assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()))
    for token in (5, 9, 11):
        a, b = fp32.step(token), int8.step(token)
        assert torch.allclose(a, b, atol=0.05 * float(a.abs().max()))
    full = int8.forward_full(torch.tensor([ids]))
    # Activations are quantized per call (over all rows), so a batch and its last row differ slightly.
    last = int8.prefill(ids)
    assert torch.allclose(full[0, -1], last, atol=0.05 * float(last.abs().max()))
    # What decode streams per token (matrices and head, not the looked-up embedding) shrinks ~4x;
    # the total less, since a tied float32 head is the embedding itself but int8 packs its own.
    embed = fp32.weights.embed.numel() * 4
    assert weight_bytes(int8) - embed < 0.35 * weight_bytes(fp32)
    assert fp32.weights.head_is_embedding and not int8.weights.head_is_embedding
    assert "".join(int8.stream("The", SamplingParams(max_new_tokens=8, temperature=0.0)))


def test_runtime_section_is_validated_and_applied(tiny_model_copy: Path) -> None:
    meta = json.loads((tiny_model_copy / "companion.json").read_text())
    (tiny_model_copy / "companion.json").write_text(json.dumps({**meta, "runtime": {"quantization": "int4"}}))
    with pytest.raises(EngineError, match="quantization 'int4'"):
        read_runtime(tiny_model_copy)
    (tiny_model_copy / "companion.json").write_text(json.dumps({**meta, "runtime": {"quantization": "int8-dynamic"}}))
    engine = FastEngine(tiny_model_copy)
    assert engine.quantization == "int8-dynamic" and engine.runtime == {"quantization": "int8-dynamic"}
    (tiny_model_copy / "companion.json").write_text(json.dumps({**meta, "runtime": {"threads_batch": 0}}))
    with pytest.raises(EngineError, match="threads_batch 0 must be a positive integer"):
        read_runtime(tiny_model_copy)
    (tiny_model_copy / "companion.json").write_text(json.dumps({**meta, "runtime": {"threads_batch": 2}}))
    assert FastEngine(tiny_model_copy).threads_batch == 2
    assert FastEngine(tiny_model_copy, threads_batch=1).threads_batch == 1  # the caller's choice wins


def test_choice_follows_the_objective_and_the_budget() -> None:
    base = {"name": "current", "ms_per_token": 2.0, "weight_mb": 30.0, "perplexity": 100.0, "spread_pct": 1.0}
    rows = [
        base,
        {"name": "a", "publishable": True, "ms_per_token": 1.0, "weight_mb": 14.0, "perplexity": 101.0},
        {"name": "b", "publishable": True, "ms_per_token": 0.8, "weight_mb": 30.0, "perplexity": 108.0},
        {"name": "c", "publishable": False, "ms_per_token": 0.1, "weight_mb": 1.0, "perplexity": 50.0},
    ]
    from models.optimization import OBJECTIVES

    chosen, gain, _ = ModelOptimizer._choose([dict(r) for r in rows], OBJECTIVES["speed_accuracy_balance"])
    assert chosen["name"] == "a" and gain == pytest.approx(50.0)
    chosen, gain, _ = ModelOptimizer._choose([dict(r) for r in rows], OBJECTIVES["speed"])
    assert chosen["name"] == "b" and gain == pytest.approx(60.0)
    chosen, _, _ = ModelOptimizer._choose([dict(r) for r in rows], OBJECTIVES["accuracy"])
    assert chosen is None  # nothing publishable has lower perplexity


def _fake_timings(monkeypatch: pytest.MonkeyPatch, fast: str | None) -> None:
    def decode(self: Any, c: Any, prompts: list[list[int]], n: int) -> tuple[float, float]:
        return (0.5 if c.name == fast else 1.0) * len(prompts) * n / 1000, 0.001

    monkeypatch.setattr(ModelOptimizer, "_decode", decode)


def test_a_winner_is_published_and_served(tiny_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = tmp_path / "held.txt"
    held.write_text(HELD)
    _fake_timings(monkeypatch, "fast-int8")
    from models.model_manager import ModelManager

    manager = ModelManager()
    opt = ModelOptimizer(manager, heldout=held, new_tokens=4, rounds=1, max_eval_tokens=200)
    r = opt.optimize_model("tiny", optimization_type="speed_accuracy_balance")
    names = [c["name"] for c in r["candidates"]]
    assert names[0] == "current" and {"fast-int8", "fast-bf16", "hf", "hf-int8", "onnxruntime"} <= set(names)
    int8 = next(c for c in r["candidates"] if c["name"] == "fast-int8")
    if int8["perplexity"] > r["baseline"]["perplexity"] * 1.02:
        pytest.skip("random tiny weights: int8 moved perplexity past the budget")
    assert r["chosen"] == "fast-int8" and r["improvement"] == pytest.approx(50.0)
    assert r["published_version"]
    from models.version_control import ModelVersionControl

    info = ModelVersionControl().show("base/tiny", r["published_version"])
    folder = Path(info.path) if hasattr(info, "path") else ModelVersionControl().folder("base/tiny", info.version)
    assert read_runtime(folder) == {"quantization": "int8-dynamic"}
    assert "fast-int8" in (info.notes or "")
    served = manager.load_model("base", "tiny")
    assert served.engine.quantization == "int8-dynamic"


def test_nothing_better_publishes_nothing(tiny_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    held = tmp_path / "held.txt"
    held.write_text(HELD)
    _fake_timings(monkeypatch, None)  # every candidate as fast as the current model
    opt = ModelOptimizer(heldout=held, new_tokens=4, rounds=1, max_eval_tokens=200)
    r = opt.optimize_model("tiny", optimization_type="speed")
    assert r["chosen"] is None and r["improvement"] == 0.0 and r["published_version"] is None
    assert "nothing published" in r["summary"]
    from models.version_control import ModelVersionControl

    assert ModelVersionControl().list_versions("base/tiny") == []


def test_bad_objective_is_refused(tiny_config: Any) -> None:
    with pytest.raises(OptimizationError, match="not one of"):
        ModelOptimizer().optimize_model("tiny", optimization_type="faster-please")


def test_real_measurements_on_the_tiny_model(tiny_config: Any, tmp_path: Path) -> None:
    held = tmp_path / "held.txt"
    held.write_text(HELD)
    r = ModelOptimizer(heldout=held, new_tokens=4, rounds=2, max_eval_tokens=200).optimize_model(
        "tiny", optimization_type="size", publish=False
    )
    measured = [c for c in r["candidates"] if "ms_per_token" in c]
    assert len(measured) >= 5
    for c in measured:
        assert c["ms_per_token"] > 0 and c["weight_mb"] > 0 and c["perplexity"] > 1
    int8 = next(c for c in measured if c["name"] == "fast-int8")
    assert int8["weight_mb"] < r["baseline"]["weight_mb"]
    assert r["published_version"] is None


def test_a_personality_version_carries_its_optimized_base(
    user_config: Any, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.model_manager import ModelManager
    from models.personality.card import CharacterCard
    from models.personality.loader import write_personality_folder

    folder = write_personality_folder(
        tmp_path / "ada",
        CharacterCard({"name": "Ada", "description": "", "first_mes": "Hi."}),
        base_model=str(tiny_model_dir),
    )
    user_config(f"models:\n  personality:\n    ada: {{type: personality, path: '{folder}'}}\n")
    held = tmp_path / "held.txt"
    held.write_text(HELD)
    _fake_timings(monkeypatch, "fast-int8")
    manager = ModelManager()
    before = manager.load_model("personality", "ada")
    assert getattr(before.base.engine, "quantization", None) is None
    r = ModelOptimizer(manager, heldout=held, new_tokens=4, rounds=1, max_eval_tokens=200).optimize_model("ada")
    int8 = next(c for c in r["candidates"] if c["name"] == "fast-int8")
    if int8["perplexity"] > r["baseline"]["perplexity"] * 1.02:
        pytest.skip("random tiny weights: int8 moved perplexity past the budget")
    assert r["published_version"]
    after = manager.load_model("personality", "ada")  # `current` moved: the manager reloads
    assert after.base.engine.quantization == "int8-dynamic"
    assert str(after.generate_response(message="Hello there", max_length=4, seed=1)) is not None
    from models.monitoring import ModelPerformanceMonitor

    m = ModelPerformanceMonitor(manager, feedback=[]).get_performance_metrics("ada", "last_hour")
    assert m["versions"] == {r["published_version"]: 1}
