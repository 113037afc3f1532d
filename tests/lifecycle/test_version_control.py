"""ModelVersionControl: snapshots, numbering, aliases with history, rollback, diff, verify, and
ModelManager following the `current` alias."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from models.errors import UnsafeFileError, VersionError
from models.model_manager import ModelManager
from models.version_control import ModelVersionControl, bump_version
from tests.lifecycle.support import edit_model


def test_first_snapshot_of_a_configured_model(luna, tiny_model_dir: Path, companion_home: Path) -> None:
    vc = ModelVersionControl(actor="ada")
    v = vc.create_version(model_name="luna_personality", version_notes="Improved emotional responses")
    assert (v.category, v.name, v.version) == ("personality", "luna", "1.0.0")
    assert v.path == companion_home / "store/personality/luna/1.0.0"
    assert v.author == "ada" and v.notes == "Improved emotional responses"
    assert v.lineage["source"] == str(tiny_model_dir) and v.lineage["source_kind"] == "served"
    assert v.aliases == ("current",)
    assert "model.safetensors" in v.files and "version.json" not in v.files
    meta = json.loads((v.path / "version.json").read_text())
    assert meta["version"] == "1.0.0" and meta["author"] == "ada"
    assert not os.access(v.path / "model.safetensors", os.W_OK) or os.geteuid() == 0  # read-only (root ignores)


def test_numbering_and_bumps(luna) -> None:
    vc = ModelVersionControl()
    got = [vc.create_version("luna", n, bump=b).version for n, b in [("a", "minor"), ("b", "minor"), ("c", "patch")]]
    got.append(vc.create_version("luna", "d", bump="major").version)
    assert got == ["1.0.0", "1.1.0", "1.1.1", "2.0.0"]
    assert [v.version for v in vc.list_versions("personality/luna")] == got
    assert bump_version({"1.9.0", "1.10.0", "2.0.0-rc.1"}, "minor") == "1.11.0"
    with pytest.raises(VersionError, match="invalid bump"):
        vc.create_version("luna", "x", bump="huge")  # type: ignore[arg-type]


def test_working_folder_wins_and_diff_shows_changes(luna, tiny_model_dir: Path, companion_home: Path) -> None:
    vc = ModelVersionControl()
    vc.create_version("luna", "from config", metrics={"perplexity": 40.0})
    work = companion_home / "work/personality/luna"
    shutil.copytree(tiny_model_dir, work)
    edit_model(work, rope_theta=20000.0)
    (work / "notes.txt").write_text("hello")
    v2 = vc.create_version("luna", "tuned", metrics={"perplexity": 31.5})
    assert v2.lineage["source_kind"] == "work" and v2.lineage["parent"] == "1.0.0"
    d = vc.diff("luna", "1.0.0", "1.1.0")
    assert d.added == {"notes.txt": 5} and not d.removed
    assert set(d.changed) == {"config.json"}
    assert d.config["config.json"]["rope_theta"][1] == 20000.0
    assert d.metrics == {"perplexity": (40.0, 31.5)}
    assert d.notes == ("from config", "tuned") and not d.identical


def test_explicit_source_and_unsafe_files(luna, tiny_model_copy: Path) -> None:
    vc = ModelVersionControl()
    v = vc.create_version("luna", "from a run", source=tiny_model_copy, lineage={"run": "r42"})
    assert v.lineage["source_kind"] == "explicit" and v.lineage["run"] == "r42"
    (tiny_model_copy / "optimizer.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeFileError, match=r"optimizer\.pt"):
        vc.create_version("luna", "bad", source=tiny_model_copy)
    assert [x.version for x in vc.list_versions("luna")] == ["1.0.0"]


def test_rollback_moves_alias_and_records_history(luna) -> None:
    vc = ModelVersionControl(actor="bob")
    for notes in ("one", "two", "three"):
        vc.create_version("luna", notes)
    result = vc.rollback_version(model_name="luna_personality", target_version="1.0.0")
    assert result and result.from_version == "1.2.0" and result.target_version == "1.0.0"
    assert vc.aliases("luna") == {"current": "1.0.0"}
    back = vc.rollback_version("luna")  # no target: where the alias was before its last move
    assert back and back.target_version == "1.2.0"
    moves = vc.alias_history("luna", "current")
    assert [(m.from_version, m.to_version) for m in moves] == [
        (None, "1.0.0"),
        ("1.0.0", "1.1.0"),
        ("1.1.0", "1.2.0"),
        ("1.2.0", "1.0.0"),
        ("1.0.0", "1.2.0"),
    ]
    assert moves[3].actor == "bob" and moves[3].reason == "rollback to 1.0.0" and moves[3].at


def test_rollback_failures_are_falsy_results_not_exceptions(luna) -> None:
    vc = ModelVersionControl()
    first = vc.rollback_version("luna", "1.0.0")
    assert not first and "no version 1.0.0" in first.reason
    vc.create_version("luna", "one")
    missing = vc.rollback_version(model_name="luna_personality", target_version="1.2.0")
    assert not missing and missing.reason == "personality/luna has no version 1.2.0 (versions: 1.0.0)"
    assert not vc.rollback_version("luna", "not-a-version")
    assert not vc.rollback_version("nobody", "1.0.0")
    assert not vc.rollback_version("luna")  # nothing earlier
    assert vc.aliases("luna") == {"current": "1.0.0"}


def test_damaged_version_is_refused_and_reported(luna) -> None:
    vc = ModelVersionControl()
    v1 = vc.create_version("luna", "one")
    vc.create_version("luna", "two")
    target = v1.path / "tokenizer.json"
    os.chmod(v1.path, 0o755)
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    report = vc.verify()
    assert not report and "tokenizer.json" in report.problems[0] and "1.0.0" in report.problems[0]
    result = vc.rollback_version("luna", "1.0.0")
    assert not result and "cannot be served" in result.reason
    assert vc.aliases("luna") == {"current": "1.1.0"}


def test_aliases_tags_and_show(luna) -> None:
    vc = ModelVersionControl(actor="carol")
    vc.create_version("luna", "one")
    vc.create_version("luna", "two", activate=False)
    assert vc.aliases("luna") == {"current": "1.0.0"}
    vc.set_alias("luna", "production", "1.1.0", reason="passed QA")
    vc.tag("luna", "1.1.0", "approved", "qa-team")
    shown = vc.show("luna", "1.1.0")
    assert shown.aliases == ("production",) and shown.tags == {"approved": "qa-team"}
    assert vc.show("luna").version == "1.0.0"  # default: the current one
    prod = vc.alias_history("luna", "production")
    assert [(m.from_version, m.to_version, m.reason, m.actor) for m in prod] == [(None, "1.1.0", "passed QA", "carol")]
    with pytest.raises(VersionError, match="no version 9.9.9"):
        vc.set_alias("luna", "production", "9.9.9")
    with pytest.raises(VersionError, match="no version 9.9.9 to tag"):
        vc.tag("luna", "9.9.9", "x")


def test_delete_refuses_an_aliased_version(luna) -> None:
    vc = ModelVersionControl()
    v1 = vc.create_version("luna", "one")
    vc.create_version("luna", "two")
    with pytest.raises(VersionError, match="still the target of alias"):
        vc.delete_version("luna", "1.1.0")
    vc.delete_version("luna", "1.0.0")
    assert not v1.path.exists() and [v.version for v in vc.list_versions("luna")] == ["1.1.0"]
    assert vc.create_version("luna", "three").version == "1.2.0"


def test_unregistered_folder_left_by_a_crash_is_adopted(luna, companion_home: Path) -> None:
    vc = ModelVersionControl()
    v1 = vc.create_version("luna", "one")
    orphan = v1.path.with_name("1.1.0")
    shutil.copytree(v1.path, orphan)  # as if a crash hit between rename and database commit
    assert vc.verify().unregistered == ["personality/luna 1.1.0"]
    v = vc.create_version("luna", "after crash")
    assert v.version == "1.2.0"
    adopted = {i.version: i for i in vc.list_versions("luna")}
    assert adopted["1.1.0"].lineage["recovered"] is True and vc.verify().ok


def test_manager_serves_current_and_reloads_when_it_moves(luna, tiny_model_dir: Path, companion_home: Path) -> None:
    manager = ModelManager()
    before = manager.load_model("personality", "luna")
    assert before.ref.folder == tiny_model_dir  # never versioned: the config's folder
    vc = ModelVersionControl()
    vc.create_version("luna", "one")
    v1 = manager.load_model("personality", "luna")
    assert v1 is not before and v1.ref.version == "1.0.0"
    assert manager.load_model("personality", "luna_personality") is v1  # warm, unchanged
    work = companion_home / "work/personality/luna"
    shutil.copytree(tiny_model_dir, work)
    edit_model(work, rms_norm_eps=1e-5)
    vc.create_version("luna", "two")
    v2 = manager.load_model("personality", "luna")
    assert v2.ref.version == "1.1.0" and v2.ref.folder == companion_home / "store/personality/luna/1.1.0"
    assert vc.rollback_version("luna", "1.0.0")
    assert manager.load_model("personality", "luna").ref.version == "1.0.0"
    assert ModelManager(alias="production").resolve("personality", "luna").folder == tiny_model_dir


def test_warm_load_alias_check_is_cheap(luna, database) -> None:
    ModelVersionControl().create_version("luna", "one")
    manager = ModelManager()
    model = manager.load_model("personality", "luna")
    for _ in range(50):
        manager.load_model("personality", "luna")
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        assert manager.load_model("personality", "luna") is model
    per_call_ms = (time.perf_counter() - t0) / n * 1000
    print(f"warm load_model with alias check: {per_call_ms * 1000:.0f} us")
    # SQLite (the embedded default) reads the alias locally; a server database adds a round trip.
    assert per_call_ms < (1.0 if database is None else 5.0)


def test_category_can_be_given_and_names_are_checked(luna, tiny_model_dir: Path) -> None:
    vc = ModelVersionControl()
    v = vc.create_version("scratch", "new model", category="experiments", source=tiny_model_dir)
    assert (v.category, v.name) == ("experiments", "scratch")
    assert vc.resolve_model("scratch") == ("experiments", "scratch")  # found in the store
    with pytest.raises(Exception, match="invalid model name"):
        vc.create_version("../etc", "x", category="experiments", source=tiny_model_dir)
