"""`python -m bench`: names run benchmarks; options after one name go to that benchmark."""

from __future__ import annotations

import pytest
from bench.__main__ import discover, main


def test_unknown_names_and_misplaced_options_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert "replies" in discover() and "serve" in discover()
    assert main(["no_such_bench"]) == 2
    assert "unknown benchmark(s): no_such_bench" in capsys.readouterr().out
    assert main(["serve", "replies", "--skip", "blind"]) == 2
    assert "options go to one benchmark" in capsys.readouterr().out
    assert main(["serve", "--fast"]) == 2  # its main takes no options
    assert "bench.serve takes no options" in capsys.readouterr().out


def test_options_reach_the_named_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.replies

    seen: list[list[str]] = []
    monkeypatch.setattr(bench.replies, "main", lambda argv=None: seen.append(list(argv or [])))
    assert main(["replies", "--skip", "blind", "context"]) == 0
    assert seen == [["--skip", "blind", "context"]]
