"""One `Context` per home, built at the edge and handed down (issue 17 item 3)."""

from __future__ import annotations

import os
from pathlib import Path

from typer.testing import CliRunner

from models.context import Context, current
from models.home import companion_home
from models.model_manager import ModelManager, default_manager


def test_an_activated_context_is_what_zero_argument_apis_see(tmp_path: Path, companion_home: Path) -> None:
    other = Context(tmp_path / "other")
    assert current().home == companion_home.resolve()
    with other.activated():
        assert current() is other
        assert companion_home_now() == other.home
        assert ModelManager().context is other
        assert default_manager() is other.manager
        assert other.database_url == f"sqlite:///{other.home / 'companion.db'}"
    assert current().home == companion_home.resolve()
    assert os.environ["COMPANION_HOME"] == str(companion_home)  # nothing rewrote the environment


def companion_home_now() -> Path:
    return companion_home()


def test_parts_are_built_once_and_use_the_context_home(context: Context) -> None:
    assert context.manager is context.manager
    assert context.store.root == context.home / "store"
    assert context.security.manager is context.manager
    vc = context.version_control()
    assert vc.home == context.home and vc.context is context
    assert context.versions.engine.url.database == str(context.home / "companion.db")


def test_a_version_control_for_another_home_gets_that_home_database(tmp_path: Path, context: Context) -> None:
    from models.lifecycle.version_control import ModelVersionControl

    vc = ModelVersionControl(tmp_path / "elsewhere")
    assert vc.context is not context and vc.home == (tmp_path / "elsewhere").resolve()
    assert vc.index.engine.url.database == str(vc.home / "companion.db")


def test_the_cli_home_option_activates_a_context_without_touching_the_environment(tmp_path: Path) -> None:
    from companion.cli import app

    before = os.environ.get("COMPANION_HOME")
    other = tmp_path / "cli-home"
    r = CliRunner().invoke(app, ["--home", str(other), "audit", "verify"])
    assert r.exit_code == 0, r.output
    assert (other / "companion.db").exists()  # the command's database is the option's home
    assert os.environ.get("COMPANION_HOME") == before
    assert current().home != other.resolve()  # and the context ended with the command
