"""Crash safety (SIGKILL at random points) and concurrency (8 processes creating versions at once).

Crash test: a long-lived helper process imports everything once, then forks one worker per trial;
once connected, the worker loops over one operation (`create_version`, `rollback_version` or `apply_updates`) and
appends every version it was told was created to a report file; the test kills it with SIGKILL
after a random delay, then checks in its own process that `verify` passes, that every reported
version exists whole (manifest re-hashed), and that the `current` alias points at a registered
version. The apply worker uses a light smoke test (config.json and safetensors header) so that
torch is never imported into a process that forks.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from models.store import verify_manifest
from models.version_control import ModelVersionControl
from tests.lifecycle.support import LUNA_CONFIG, Publisher, edit_model

WORKER = r"""
import os, sys, random, json
from pathlib import Path
from models.version_control import ModelVersionControl
from models.update_manager import ModelUpdateManager
from models.store import check_safe_files, parse_version

report = Path(sys.argv[1])

def light_smoke(folder):
    json.loads((folder / "config.json").read_text())
    check_safe_files(folder)
    return "ok"

def work(op, seed):
    rng = random.Random(seed)
    vc = ModelVersionControl(actor=f"worker-{os.getpid()}")
    vc.aliases("luna")  # connected: from here on every instant is inside an operation
    Path(f"{report}.ready.{seed}").touch()
    if op == "create":
        while True:
            v = vc.create_version("luna", f"crash test {seed}", bump=rng.choice(["minor", "patch"]))
            with report.open("a") as f:
                f.write(v.version + "\n")
    if op == "rollback":
        while True:
            versions = [v.version for v in vc.list_versions("luna")]
            vc.rollback_version("luna", rng.choice(versions))
    if op == "update":
        manager = ModelUpdateManager(version_control=vc, smoke=light_smoke, progress=False)
        while True:
            if parse_version(vc.aliases("luna")["current"]) >= parse_version("9.0.0"):  # 9.x: creates after 9.0.0
                vc.rollback_version("luna", "1.0.0")
            if any(v.version == "9.0.0" for v in vc.list_versions("luna")):
                vc.delete_version("luna", "9.0.0")
            found = manager.check_updates()
            result = manager.apply_updates(found)
            if result.applied:
                with report.open("a") as f:
                    f.write("9.0.0\n")
            else:
                with open(f"{report}.log", "a") as f:
                    f.write(f"{found.refused} {result.outcomes}\n")

for line in sys.stdin:
    op, seed = line.split()
    pid = os.fork()
    if pid == 0:
        sys.stdin.close()
        try:
            work(op, int(seed))
        finally:
            os._exit(1)
    print(pid, flush=True)
    sys.stdin.readline()  # the test killed it
    _, status = os.waitpid(pid, 0)
    print(status, flush=True)
"""


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def check_after_kill(vc: ModelVersionControl, report: Path, trial: str) -> None:
    verdict = vc.verify(full=False)
    assert verdict.ok, f"{trial}: {verdict.problems}"
    registered = {v.version for v in vc.list_versions("luna")}
    on_disk = set(vc.store.list_versions("personality", "luna"))
    for version in report.read_text().split() if report.exists() else []:
        if version == "9.0.0":  # the update worker deletes and re-installs it on purpose
            continue
        assert version in registered, f"{trial}: {version} was reported created but is not registered"
        verify_manifest(vc.store.version_dir("personality", "luna", version), full=True)
    assert on_disk >= registered - {"9.0.0"}
    current = vc.aliases("luna").get("current")
    assert current in registered, f"{trial}: current -> {current}, registered {sorted(registered)}"


@pytest.mark.slow
def test_sigkill_at_random_points_never_corrupts(luna, user_config, tmp_path: Path, tiny_model_dir: Path) -> None:
    pub = Publisher(tmp_path / "pub")
    for _ in range(8):  # 1.0.0 ... 8.0.0, so the catalog offers 9.0.0: above anything the workers create
        pub.vc.create_version("luna", "pre", category="personality", source=tiny_model_dir, bump="major")
    new = edit_model(shutil.copytree(tiny_model_dir, tmp_path / "v9"), rope_theta=9.0)
    assert pub.publish(new, bump="major") == "9.0.0"
    user_config(LUNA_CONFIG + pub.updates_config(str(pub.catalog)))
    vc = ModelVersionControl()
    vc.create_version("luna", "start")
    report = tmp_path / "reported.txt"
    helper = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WORKER), str(report)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    rng = random.Random(1234)
    plan = ["create"] * 20 + ["rollback"] * 15 + ["update"] * 15
    rng.shuffle(plan)
    kills = 0
    try:
        for n, op in enumerate(plan):
            helper.stdin.write(f"{op} {n}\n")  # type: ignore[union-attr]
            helper.stdin.flush()  # type: ignore[union-attr]
            pid = int(helper.stdout.readline())  # type: ignore[union-attr]
            wait_for(Path(f"{report}.ready.{n}").exists)
            if op != "rollback" and rng.random() < 0.5:  # half the time, let one operation complete first
                done = report.stat().st_size if report.exists() else 0
                wait_for(lambda: report.exists() and report.stat().st_size > done)  # noqa: B023
            time.sleep(rng.uniform(0.0, 0.3 if op != "rollback" else 0.1))
            os.kill(pid, signal.SIGKILL)
            helper.stdin.write("reaped?\n")  # type: ignore[union-attr]
            helper.stdin.flush()  # type: ignore[union-attr]
            status = int(helper.stdout.readline())  # type: ignore[union-attr]
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"trial {n} ({op}) ended early"
            kills += 1
            check_after_kill(vc, report, f"trial {n} ({op})")
    finally:
        helper.stdin.close()  # type: ignore[union-attr]
        helper.wait(timeout=30)
        helper.stdout.close()  # type: ignore[union-attr]
    assert kills == 50
    created = report.read_text().split()
    recovered = [v.version for v in vc.list_versions("luna") if v.lineage.get("recovered")]
    staging_left = list(vc.store.model_dir("personality", "luna").glob(".tmp-*"))
    print(f"50 kills: {len(created)} versions reported created, {len(recovered)} adopted after a kill between")
    print(f"publish and commit, {len(staging_left)} staging folders left for gc")
    assert len([v for v in created if v != "9.0.0"]) >= 3 and "9.0.0" in created  # the kills hit real work
    assert vc.create_version("luna", "after the storm").version  # still writable


CREATOR = r"""
import sys, time
from models.version_control import ModelVersionControl
start = float(sys.argv[1])
vc = ModelVersionControl(actor=sys.argv[2])
time.sleep(max(0.0, start - time.time()))
for i in range(25):
    print(vc.create_version("luna", f"{sys.argv[2]} #{i}", bump="patch").version, flush=True)
"""


@pytest.mark.slow
def test_eight_processes_create_200_unique_versions(luna) -> None:
    ModelVersionControl().create_version("luna", "baseline")  # the database exists before the race
    start = str(time.time() + 3.0)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CREATOR), start, f"proc{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    reported = [v for out, _ in outputs for v in out.split()]
    assert len(reported) == 200 and len(set(reported)) == 200
    vc = ModelVersionControl()
    versions = [v.version for v in vc.list_versions("luna")]
    assert len(versions) == 201 and set(reported) <= set(versions)
    assert versions[-1] == "1.0.200"
    assert len(vc.alias_history("luna", "current")) == 201
    assert vc.verify(full=False).ok
