"""The shared training loop: learns, evaluates, stops early, checkpoints, resumes exactly."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.errors import DataError, TrainingError
from models.training.base import BaseModelSpec, train_base
from models.training.corpus import TokenWindows
from models.training.loop import TrainSettings, train


def tiny_llama(vocab: int = 64, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


def pattern_data(seq_len: int = 16) -> TokenWindows:
    # A repeating sequence: perfectly learnable, so the loss must fall.
    stream = np.tile(np.arange(1, 33, dtype=np.uint16), 200)
    return TokenWindows(stream[:5000], stream[5000:], seq_len=seq_len, seed=3, eval_batch=8, eval_windows=16)


SETTINGS = TrainSettings(
    max_steps=30,
    batch_size=8,
    micro_batch_size=4,
    lr=1e-2,
    warmup_steps=3,
    eval_every=10,
    checkpoint_every=10,
    log_every=5,
    seed=5,
)


def test_loss_falls_and_artifacts_are_written(tmp_path: Path) -> None:
    model = tiny_llama()
    result = train(model, pattern_data(), SETTINGS, tmp_path / "run", progress=False)
    evals = [h["eval_loss"] for h in result.history if "eval_loss" in h]
    assert evals[-1] < evals[0] * 0.7
    assert result.best_eval_perplexity is not None and result.best_eval_perplexity < 30
    for name in (
        "loss_curve.png",
        "result.json",
        "settings.json",
        "checkpoint/model.safetensors",
        "checkpoint/optimizer.safetensors",
        "checkpoint/state.json",
        "best/model.safetensors",
    ):
        assert (tmp_path / "run" / name).exists(), name
    assert (tmp_path / "run" / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.tokens_seen == 30 * 8 * 16


def test_no_pickle_in_checkpoints(tmp_path: Path) -> None:
    train(tiny_llama(), pattern_data(), replace(SETTINGS, max_steps=10), tmp_path / "run", progress=False)
    from models.store import check_safe_files

    check_safe_files(tmp_path / "run")  # raises on any pickle


class Crash(Exception):
    pass


def test_resume_after_a_crash_is_exact(tmp_path: Path) -> None:
    full = tiny_llama()
    train(full, pattern_data(), SETTINGS, tmp_path / "a", progress=False)

    crashed = tiny_llama()
    seen = []

    def crash_after_first(ckpt: Path) -> None:
        seen.append(json.loads((ckpt / "state.json").read_text())["step"])
        if len(seen) == 1:
            raise Crash

    with pytest.raises(Crash):
        train(crashed, pattern_data(), SETTINGS, tmp_path / "b", progress=False, on_checkpoint=crash_after_first)
    assert seen == [10]
    resumed = tiny_llama(seed=99)  # different init: everything must come from the checkpoint
    train(resumed, pattern_data(), SETTINGS, tmp_path / "b", resume=True, progress=False)
    for (n, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), n


def test_accumulation_matches_one_big_batch(tmp_path: Path) -> None:
    a, b = tiny_llama(), tiny_llama()
    s = replace(SETTINGS, max_steps=5, eval_every=5)
    train(a, pattern_data(), replace(s, micro_batch_size=8), tmp_path / "a", progress=False)
    train(b, pattern_data(), replace(s, micro_batch_size=2), tmp_path / "b", progress=False)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-5), n


def test_early_stopping_says_so(tmp_path: Path) -> None:
    s = replace(SETTINGS, max_steps=200, eval_every=2, patience=2, min_delta=10.0)
    result = train(tiny_llama(), pattern_data(), s, tmp_path / "run", progress=False)
    assert result.stopped_early
    assert "early stop" in result.stop_reason
    assert result.steps < 200


def test_bad_settings_and_data_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="split evenly"):
        train(tiny_llama(), pattern_data(), replace(SETTINGS, micro_batch_size=3), tmp_path / "x", progress=False)
    with pytest.raises(TrainingError, match="schedule"):
        train(tiny_llama(), pattern_data(), replace(SETTINGS, schedule="step"), tmp_path / "x", progress=False)
    with pytest.raises(TrainingError, match="no checkpoint"):
        train(tiny_llama(), pattern_data(), SETTINGS, tmp_path / "fresh", resume=True, progress=False)
    with pytest.raises(DataError, match="fewer than one window"):
        TokenWindows(np.arange(5, dtype=np.uint16), np.arange(100, dtype=np.uint16), seq_len=16, seed=0)


def make_corpus(root: Path) -> Path:
    from tests.conftest import TINY_TEXT

    (root / "books").mkdir(parents=True)
    for i in range(3):
        (root / "books" / f"book{i}.txt").write_text((TINY_TEXT + "\n\n") * 30)
    spc = root / "dialogue" / "synthetic_persona_chat"
    spc.mkdir(parents=True)
    rows = ["user 1 personas,user 2 personas,Best Generated Conversation"]
    for i in range(25):
        rows.append(
            f'"I like tea.","I write books.","User 1: Hello number {i}!\nUser 2: Hi, I am writing a story.\n'
            f'User 1: What is it about?\nUser 2: A lighthouse keeper."'
        )
    (spc / "Synthetic-Persona-Chat_valid.csv").write_text("\n".join(rows) + "\n")
    return root


def test_base_recipe_end_to_end(tmp_path: Path) -> None:
    data = make_corpus(tmp_path / "data")
    spec = BaseModelSpec(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    s = TrainSettings(
        max_steps=8, batch_size=4, micro_batch_size=4, warmup_steps=2, eval_every=4, checkpoint_every=4, seed=1
    )
    result = train_base(data, tmp_path / "run", spec=spec, settings=s, seq_len=32, progress=False)
    assert result.steps == 8
    folder = tmp_path / "run" / "model"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["parameters"] > 0 and report["sources"]
    from models.transformer_model import TransformerModel

    m = TransformerModel(folder, seed=0, max_length=5)
    assert isinstance(m.generate("The lighthouse"), str)
    assert m.engine.codec.has_emotion_tokens


def test_base_recipe_refuses_empty_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no training text"):
        train_base(tmp_path / "empty", tmp_path / "run", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        train_base(tmp_path / "missing", tmp_path / "run", progress=False)


def test_plateaus_cut_the_learning_rate_and_resume_keeps_the_cut(tmp_path: Path) -> None:
    from models.training.loop import _lr_lambda

    # min_delta 10: no evaluation ever counts as an improvement after the first
    s = replace(
        SETTINGS, max_steps=12, eval_every=4, checkpoint_every=4, log_every=1, min_delta=10.0, plateau_factor=0.5
    )
    result = train(tiny_llama(), pattern_data(), s, tmp_path / "a", progress=False)
    lr = {h["step"]: h["lr"] for h in result.history if "lr" in h}
    plain = {step: s.lr * _lr_lambda(s)(step) for step in lr}  # the schedule alone (after `step` steps)
    assert lr[4] == pytest.approx(plain[4])  # first evaluation at step 4 sets the best: no cut
    assert lr[9] == pytest.approx(plain[9] * 0.5)  # step 8 did not improve: halved
    assert lr[12] == pytest.approx(plain[12] * 0.5)  # logged before step 12's evaluation cuts it again
    state = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert state["lr_scale"] == 0.25
    with pytest.raises(TrainingError, match="plateau_factor"):
        train(tiny_llama(), pattern_data(), replace(s, plateau_factor=1.5), tmp_path / "b", progress=False)


def test_the_progress_bar_says_honestly_how_long_is_left() -> None:
    """Issue 20: a run that may stop early showed a firm ETA of the whole step budget."""
    from models.training.progress import Progress

    plain = Progress(100, 0, "run", enabled=False)
    plain._t0 = 0.0
    assert plain.remaining(10, 60.0) == "0:09:00 left" and plain.remaining(0, 5.0) == ""
    early = Progress(100, 0, "run", enabled=False, early_stopping=True)
    early._t0 = 0.0
    assert early.remaining(10, 60.0) == "at most 0:09:00 left (early stopping may end sooner)"
    budget = Progress(100, 0, "run", enabled=False, budget_s=120.0, early_stopping=True)
    budget._t0 = 0.0
    assert budget.remaining(10, 60.0) == "0:01:00 left (time budget)"  # the budget ends it first
    resumed = Progress(100, 50, "run", enabled=False)
    resumed._t0 = 0.0
    assert resumed.remaining(60, 10.0) == "0:00:40 left"  # the rate counts only this run's steps
