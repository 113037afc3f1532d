"""Distillation (issue 23): a smaller student of a local model, trained on the teacher's replies,
published as a normal versioned model with the teacher-against-student table."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.errors import DataError, TrainingError
from models.training.distill import DistillSettings, default_prompts, distill, read_prompts

FAST = DistillSettings(steps=4, eval_every=2, samples_per_prompt=1, max_new_tokens=12, batch_size=4, threads=1)


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(f"Tell me about the sea, part {i}." for i in range(30)) + "\n")
    return path


def test_a_student_is_distilled_published_and_loads(user_config, tmp_path: Path) -> None:
    user_config("models:\n  base:\n    tiny:\n      type: transformer\n      path: '{tiny}'\n")
    result = distill("tiny", "tiny-student", prompts=_prompts(tmp_path), settings=FAST)
    teacher, student = result.table
    assert teacher["model"] == "teacher" and student["parameters"] < teacher["parameters"]
    assert student["size_mb"] < teacher["size_mb"] and student["tokens_per_s"] > 0
    assert student["heldout_perplexity"] > 1 and result.heldout_sequences > 0 and result.steps == 4
    assert [h["step"] for h in result.history] == [2, 4]
    from models.lifecycle.version_control import ModelVersionControl
    from models.model_manager import ModelManager

    info = ModelVersionControl().show("base/tiny-student", result.version)
    assert info.lineage["recipe"] == "distill" and info.lineage["teacher"] == "base/tiny"
    assert info.lineage["layers"] == 1 and info.lineage["table"] == result.table
    model = ModelManager().load_model("base", "tiny-student")
    assert isinstance(model.generate("Hello", max_length=4, seed=1), str)


def test_the_cli_prints_the_table(user_config, tmp_path: Path) -> None:
    from companion.cli import app

    user_config("models:\n  base:\n    tiny:\n      type: transformer\n      path: '{tiny}'\n")
    r = CliRunner().invoke(app, ["compress", "distill", "tiny", "--name", "mini", "--prompts", str(_prompts(tmp_path)),
                                 "--steps", "2", "--samples", "1", "--no-publish"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "teacher" in r.output and "student" in r.output and "held-out perplexity" in r.output
    r = CliRunner().invoke(app, ["compress", "distill", "tiny", "--name", "mini", "--layers", "9", "--no-publish",
                                 "--prompts", str(_prompts(tmp_path))])  # fmt: skip
    assert r.exit_code == 1 and "the teacher has 2 layers" in r.output


def test_prompts_and_settings_are_checked(tmp_path: Path) -> None:
    assert len(default_prompts()) > 300  # the package's dialogues
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": "hello"}\n')
    with pytest.raises(DataError, match="bad.jsonl:1: messages"):
        read_prompts(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(DataError, match="no prompts"):
        read_prompts(empty)
    with pytest.raises(TrainingError, match="alpha"):
        distill("tiny", "x", settings=DistillSettings(alpha=2), publish=False)
