"""Every shell command and Python block the README prints, run as printed, in a temporary home.

The commands run in a shell in an empty working folder with `COMPANION_HOME` set to a temporary
folder, the virtual environment's `bin` first on `PATH`, and stdin closed (so `companion chat`
greets and ends at end-of-input). `companion serve` is started, must answer `/healthz`, and is
stopped. The Makefile's own targets (`make demo`, `make test`) are what CI runs, so they are
left out here: `make test` is this suite.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def shell_commands() -> list[str]:
    """Each line of each ```bash block, without its trailing `  # comment`."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.splitlines():
            cmd = re.split(r"\s{2,}#", line)[0].strip()
            if cmd and not cmd.startswith("#") and not cmd.startswith("make "):
                out.append(cmd)
    return out


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["COMPANION_HOME"] = str(home)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.mark.slow
def test_the_readme_prints_commands_and_code() -> None:
    commands = shell_commands()
    assert any(c.startswith("companion run") or "companion run" in c for c in commands)
    assert len(commands) > 20 and python_blocks()


@pytest.mark.slow
@pytest.mark.parametrize("command", shell_commands())
def test_each_readme_command_runs_as_printed(command: str, tmp_path: Path) -> None:
    home, cwd = tmp_path / "home", tmp_path / "work"
    cwd.mkdir()
    env = _env(home)
    if command.startswith("companion serve"):
        port = "8080" if "--port 8080" in command else "8000"
        proc = subprocess.Popen(  # the README's command, as printed
            command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            else:
                pytest.fail(f"{command!r} did not answer /healthz within 120 s")
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        return
    r = subprocess.run(  # the README's command, as printed
        command, shell=True, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, f"{command!r} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert "Traceback" not in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_each_readme_python_block_runs(index: int, tmp_path: Path) -> None:
    code = python_blocks()[index]
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path / "home"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, f"README python block {index}:\n{code}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
