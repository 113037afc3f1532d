"""The spec's "Version Control" and "Update Management" samples, run exactly as written in a fresh
process with a fresh COMPANION_HOME and an unrelated working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VERSION_CONTROL = """from models.version_control import ModelVersionControl

version_control = ModelVersionControl()

# Create new model version
new_version = version_control.create_version(
    model_name="luna_personality",
    version_notes="Improved emotional responses"
)

# Rollback to previous version
rollback_success = version_control.rollback_version(
    model_name="luna_personality",
    target_version="1.2.0"
)
"""

UPDATE_MANAGEMENT = """from models.update_manager import ModelUpdateManager

update_manager = ModelUpdateManager()

# Check for updates
available_updates = update_manager.check_updates()

# Apply updates
update_result = update_manager.apply_updates(
    updates=available_updates,
    backup_existing=True
)
"""

REPORT = """
print("CREATED", new_version.version, new_version.model)
print("ROLLBACK", bool(rollback_success), rollback_success.reason)
"""

SERVED = """
from models.model_manager import ModelManager
print(ModelManager().resolve("personality", "luna_personality").version)
"""

SPEC = Path(__file__).resolve().parents[3] / "shared" / "seed" / "000_7e10592c6f9a9049.txt"


@pytest.mark.skipif(not SPEC.exists(), reason="the spec lives in ../shared, beside the repository")
def test_samples_are_the_specs_own_code() -> None:
    text = SPEC.read_text()
    for sample in (VERSION_CONTROL, UPDATE_MANAGEMENT):
        assert f"```python\n{sample}```" in text


def run_sample(code: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COMPANION_HOME"}
    env["COMPANION_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_seed_samples_run_as_written(tmp_path: Path) -> None:
    home, cwd = tmp_path / "fresh-home", tmp_path / "somewhere-else"
    cwd.mkdir()
    first = run_sample(VERSION_CONTROL + REPORT, home, cwd)
    assert first.returncode == 0, first.stderr
    assert "CREATED 1.0.0 personality/luna" in first.stdout
    assert "ROLLBACK False personality/luna has no version 1.2.0 (versions: 1.0.0)" in first.stdout
    updates = run_sample(UPDATE_MANAGEMENT + "print('UPDATES', available_updates, bool(update_result))", home, cwd)
    assert updates.returncode == 0, updates.stderr
    assert "UPDATES [] True" in updates.stdout
    for _ in range(2):  # run again: 1.1.0, then 1.2.0, and the rollback now succeeds
        again = run_sample(VERSION_CONTROL + REPORT, home, cwd)
        assert again.returncode == 0, again.stderr
    assert "CREATED 1.2.0" in again.stdout and "ROLLBACK True" in again.stdout
    assert (home / "store/personality/luna/1.2.0/manifest.json").exists()
    served = run_sample(SERVED, home, cwd)
    assert served.stdout.split() == ["1.2.0"], served.stderr  # the manager serves the current version
    assert not list(cwd.iterdir())  # nothing written to the working directory
