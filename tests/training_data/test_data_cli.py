"""`companion data collect|preprocess|validate|show`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from companion.cli import app

runner = CliRunner()


def run(*args: str) -> dict:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else {"output": result.output}


def test_collect_preprocess_validate_show_chain(tmp_path: Path) -> None:
    collected = run(
        "data", "collect", "writing", "Book_Collection", "-g", "mystery", "-o", str(tmp_path / "w"), "--json"
    )
    assert collected["records"] == 3 and len(collected["content_sha256"]) == 64
    pre = run(
        "data", "preprocess", "writing", str(tmp_path / "w"), "-o", str(tmp_path / "p"), "--max-length", "128", "--json"
    )
    assert pre["records_in"] == 3 and pre["records_out"] > 3 and pre["anonymization"]["applied"] is True
    val = run("data", "validate", "writing", str(tmp_path / "p"), "-o", str(tmp_path / "v"), "--json")
    assert val["total"] == pre["records_out"] and "histogram" in val
    info = json.loads((tmp_path / "v" / "dataset.json").read_text())
    assert [s["step"] for s in info["lineage"]["steps"]] == ["collect", "load", "preprocess", "load", "validate"]
    shown = run("data", "show", str(tmp_path / "v"), "--json")
    assert shown["info"]["rows"] == val["kept"] and "input_ids" not in shown["rows"][0]
    table = run("data", "validate", "conversations", "discord_logs")["output"]
    assert "validated conversations" in table and "pass_rate" in table


def test_show_lists_sources_and_errors_are_one_line(tmp_path: Path) -> None:
    sources = run("data", "show", "--json")
    assert {"Book_Collection", "discord_logs", "characters", "user_data"} <= set(sources)
    result = runner.invoke(app, ["data", "collect", "writing", "Nope_Collection"])
    assert result.exit_code == 1 and "unknown data source 'Nope_Collection'" in result.output
    result = runner.invoke(app, ["data", "collect", "poems", "Book_Collection"])
    assert result.exit_code == 1 and "kind must be one of" in result.output
