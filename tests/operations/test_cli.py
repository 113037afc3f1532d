"""`companion eval`, `companion monitor` (table, JSON, PNG) and `companion optimize --dry-run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from companion.cli import app

runner = CliRunner()


def test_eval_then_monitor_with_chart(tiny_config: Any, tmp_path: Path) -> None:
    held = tmp_path / "held.txt"
    held.write_text("The lighthouse keeper wrote a letter every evening. " * 10)
    r = runner.invoke(app, ["eval", "tiny", "--data", str(held), "--emotion-samples", "0", "--json"])
    assert r.exit_code == 0, r.output
    run = json.loads(r.output)
    from models.model_manager import ModelManager

    ModelManager().load_model("base", "tiny").generate("Once", max_length=3)
    chart = tmp_path / "tiny.png"
    r = runner.invoke(app, ["monitor", "tiny", "--period", "last_hour", "--chart", str(chart), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["requests"] == 1 and data["accuracy"] == round(100 * run["next_token_accuracy"], 2)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["monitor", "--period", "last_hour", "--no-chart"])
    assert r.exit_code == 0 and "base/tiny" in r.output


def test_monitor_bad_period_is_one_clear_line(tiny_config: Any) -> None:
    r = runner.invoke(app, ["monitor", "tiny", "--period", "fortnight-ish", "--no-chart"])
    assert r.exit_code == 1 and "not understood" in r.output and "Traceback" not in r.output


def test_optimize_dry_run_prints_the_table(tiny_config: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from models.optimization import ModelOptimizer

    monkeypatch.setattr(ModelOptimizer, "__init__", _small_init(ModelOptimizer.__init__, tmp_path))
    r = runner.invoke(app, ["optimize", "tiny", "--objective", "size", "--dry-run"])
    assert r.exit_code == 0, r.output
    words = " ".join(r.output.split())  # Rich wraps where the numbers' widths put it
    assert "candidates (size)" in words and "not published" in words


def _small_init(init: Any, tmp_path: Path) -> Any:
    held = tmp_path / "held.txt"
    held.write_text("The lighthouse keeper wrote a letter every evening. " * 10)

    def small(self: Any, manager: Any = None, **_: Any) -> None:
        init(self, manager, heldout=held, new_tokens=4, rounds=1, max_eval_tokens=100)

    return small


def test_every_command_is_listed_with_a_one_line_summary() -> None:
    import typer

    def commands(group: typer.Typer) -> list[typer.models.CommandInfo]:
        found = list(group.registered_commands)
        for sub in group.registered_groups:
            found += commands(sub.typer_instance)
        return found

    listed = commands(app)
    assert len(listed) > 40
    for info in listed:
        summary = info.short_help or ""
        name = info.name or info.callback.__name__
        # a docstring's hard line breaks used to show up in `companion --help` as ragged rows
        assert summary and "\n" not in summary and "  " not in summary, name
        doc = " ".join((info.help or info.callback.__doc__ or "").split())
        assert doc.startswith(summary), name
