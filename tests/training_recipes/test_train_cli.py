"""`companion train personality|personalization`: summary tables, JSON, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from companion.cli import app

runner = CliRunner()


def test_train_personality_prints_a_summary_and_publishes(ada: Path, ada_lines: Path) -> None:
    r = runner.invoke(app, ["train", "personality", "ada", "--data", str(ada_lines), "--epochs", "1", "--rank", "4"])
    assert r.exit_code == 0, r.output
    assert "personality trained" in r.output and "personality/ada 1.0.0" in r.output
    assert "heldout_perplexity" in r.output
    r = runner.invoke(
        app, ["train", "personality", "ada", "-d", str(ada_lines), "--epochs", "1", "--rank", "4", "--json"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["version"] == "1.1.0" and data["method"] == "lora" and data["lineage"]["data_sha256"]


def test_train_personality_errors_are_one_line(ada: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["train", "personality", "ada", "--data", str(tmp_path / "nowhere"), "--epochs", "1"])
    assert r.exit_code == 1 and "error:" in r.output and "does not exist" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(app, ["train", "personality", "ada", "--method", "qlora"])
    assert r.exit_code == 1 and "method must be one of lora, full" in r.output


def test_train_personalization_on_the_shipped_sample_user() -> None:
    r = runner.invoke(app, ["train", "personalization", "user_prefs", "--epochs", "5", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["published"] and data["metrics"]["writing_words"] > 500
    assert "style adapter skipped" in data["stop_reason"]
