"""`companion models versions|snapshot|diff|verify|rollback|alias` and `companion updates ...`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from companion.cli import app
from tests.lifecycle.support import LUNA_CONFIG, edit_model

runner = CliRunner()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_version_commands(luna, tiny_model_dir: Path, companion_home: Path) -> None:
    assert "no versions yet" in run("models", "versions", "luna")
    assert "created personality/luna 1.0.0" in run("models", "snapshot", "luna", "-m", "first")
    work = companion_home / "work/personality/luna"
    import shutil

    shutil.copytree(tiny_model_dir, work)
    edit_model(work, rope_theta=12345.0)
    created = json.loads(run("models", "snapshot", "luna_personality", "-m", "second", "--json"))
    assert created["version"] == "1.1.0" and created["aliases"] == ["current"]
    listed = json.loads(run("models", "versions", "personality/luna", "--json"))
    assert [v["version"] for v in listed] == ["1.0.0", "1.1.0"]
    assert "second" in run("models", "versions", "luna")
    diff = json.loads(run("models", "diff", "luna", "1.0.0", "1.1.0", "--json"))
    assert diff["config"]["config.json"]["rope_theta"][1] == 12345.0
    assert "rope_theta" in run("models", "diff", "luna", "1.0.0", "1.1.0")
    assert "2 versions checked, 0 problems" in run("models", "verify")
    assert "rolled back" in run("models", "rollback", "luna", "1.0.0", "--reason", "regression")
    assert "no version 1.2.0" in run("models", "rollback", "luna", "1.2.0", code=1)
    run("models", "alias", "luna", "production", "1.1.0", "--reason", "QA passed")
    shown = json.loads(run("models", "alias", "luna", "--json"))
    assert shown["aliases"] == {"current": "1.0.0", "production": "1.1.0"}
    assert shown["history"][-2]["reason"] == "regression" and shown["history"][-1]["reason"] == "QA passed"
    assert "alias history" in run("models", "alias", "luna")


def test_verify_fails_on_a_damaged_version(luna, companion_home: Path) -> None:
    import os

    run("models", "snapshot", "luna")
    folder = companion_home / "store/personality/luna/1.0.0"
    os.chmod(folder, 0o755)
    os.chmod(folder / "config.json", 0o644)
    edit_model(folder, vocab_size=1)
    out = run("models", "verify", code=1)
    assert "problem" in out and "FAILED" in out


def test_update_commands(luna, user_config, tmp_path: Path, companion_home: Path) -> None:
    run("models", "snapshot", "luna", "-m", "shipped")
    assert "no update catalogs are configured" in run("updates", "check")  # says why there is nothing
    key = tmp_path / "key.pem"
    keygen = json.loads(run("updates", "keygen", "--out", str(key), "--json"))
    assert keygen["public_key"].startswith("ed25519:") and (key.stat().st_mode & 0o777) == 0o600
    assert "refusing to overwrite" in run("updates", "keygen", "--out", str(key), code=1)
    catalog = tmp_path / "catalog"
    published = json.loads(run("updates", "publish", "luna", "--to", str(catalog), "--key", str(key), "--json"))
    assert published["version"] == "1.0.0" and published["catalog_version"] == 1
    assert (catalog / "personality/luna/1.0.0/model.safetensors").exists()
    updates = f"updates:\n  catalogs: ['{catalog}']\n  trusted_keys: ['{keygen['public_key']}']\n"
    user_config(LUNA_CONFIG + updates)
    assert "no updates available from 1 catalog(s)" in run("updates", "check")  # we already run 1.0.0
    (catalog / "catalog.json").write_text((catalog / "catalog.json").read_text().replace("1.0.0", "1.0.1"))
    assert "refused catalog" in run("updates", "check", code=1)
    assert "refused catalog" in run("updates", "apply", code=1)
