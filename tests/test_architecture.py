"""The layer order and module privacy hold (issue 17): checked in CI through `make test`.

Layers, lowest first: engines < store < models (transformer, manager, registry) <
personality | personalization < hybrid/adaptive < training < companion (CLI, server). The
contract lives in `.importlinter`; inference never imports training. No module in `src` reads
another's private names (ruff's SLF001, with each exception justified where it stands).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: `make venv` installs the test extras")
    return found


def test_import_layers_hold() -> None:
    run = subprocess.run([_tool("lint-imports"), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_no_module_reads_another_modules_private_names() -> None:
    run = subprocess.run(
        [_tool("ruff"), "check", "--select", "SLF001", "--output-format", "concise", "src"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:]


def test_inference_does_not_import_training() -> None:
    code = (
        "import sys; from models.engines.llama import FastEngine; from models.engines.hf import HFEngine; "
        "import models.transformer_model; "
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] == ['models', 'training']); print(bad); "
        "raise SystemExit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
