"""Scale-out and crash safety of the one loop, in real processes: 2 gloo ranks under
`accelerate launch` match 1 process; a SIGKILLed personality run resumes to the same weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = Path(__file__).with_name("run_recipe.py")


def _env() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": root, "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    one = subprocess.run([sys.executable, str(SCRIPT), "dist", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(_free_port()), str(SCRIPT), "dist", str(tmp_path / "two")]  # fmt: skip
    two = subprocess.run(launch, env=_env(), capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert (tmp_path / "two" / "world.txt").read_text().startswith("2 ")  # really two ranks
    a, b = (
        load_file(str(tmp_path / "one" / "final.safetensors")),
        load_file(str(tmp_path / "two" / "final.safetensors")),
    )
    assert a.keys() == b.keys()
    for name in a:  # gloo sums in another order than one process: equal up to float rounding
        assert torch.allclose(a[name], b[name], atol=2e-6, rtol=1e-5), name
    moved = sum(
        float((a[n] - load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))[n]).abs().sum()) for n in a
    )
    assert moved == 0.0  # the final checkpoint holds the final weights


@pytest.mark.slow
def test_a_killed_personality_run_resumes_to_the_same_weights(ada: Path, ada_lines: Path, tmp_path: Path) -> None:
    from models.training import LoraSettings, ModelTrainer

    def run(out: Path, resume: bool = False) -> None:
        ModelTrainer(progress=False).train_personality_model(
            "ada", ada_lines, epochs=3, publish=False, output_dir=out, resume=resume, patience=10, batch_size=8,
            lora=LoraSettings(r=4, alpha=8.0, dropout=0.1),
        )  # fmt: skip

    run(tmp_path / "straight")
    per_epoch = json.loads((tmp_path / "straight" / "settings.json").read_text())["eval_every"]
    assert per_epoch >= 2
    kill_at = per_epoch + 1  # the middle of the second epoch
    crashed = subprocess.run(
        [sys.executable, str(SCRIPT), "personality", str(tmp_path / "crashed"), str(ada_lines), str(kill_at)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    state = json.loads((tmp_path / "crashed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == per_epoch  # the last checkpoint before the kill; the step after it is lost
    run(tmp_path / "crashed", resume=True)
    for which in ("checkpoint", "best"):
        a = load_file(str(tmp_path / "straight" / which / "model.safetensors"))
        b = load_file(str(tmp_path / "crashed" / which / "model.safetensors"))
        assert a.keys() == b.keys() and a
        for name in a:
            assert torch.equal(a[name], b[name]), (which, name)
