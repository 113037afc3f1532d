"""Every enforced path denies a user without the right, and logs the denial."""

from __future__ import annotations

import pytest

from models.errors import AccessDenied
from models.model_manager import ModelManager
from models.security import acting_as, require
from models.security.manager import ModelSecurityManager
from models.version_control import ModelVersionControl

READER = (
    "models:\n  personality:\n    luna: {type: transformer, path: '{tiny}', parameters: {max_length: 4}}\n"
    "security:\n  roles:\n    reader: [{models: 'personality/*', level: read}]\n"
    "  users:\n    rita: {roles: [reader]}\n"
)


@pytest.fixture
def policy(user_config, database) -> None:
    user_config(READER)


def denials(user: str) -> list[str]:
    rows = ModelSecurityManager().audit.show(user=user)
    return [r.action for r in rows if r.allowed is False]


def test_local_owner_works_out_of_the_box(policy) -> None:
    model = ModelManager().load_model("personality", "luna")
    assert isinstance(model.generate("The", max_length=2), str)
    rows = ModelSecurityManager().audit.show(user="local")
    assert ("load", True) in [(r.action, r.allowed) for r in rows]
    assert ("generate", True) in [(r.action, r.allowed) for r in rows]


def test_load_is_denied_and_logged(policy) -> None:
    with pytest.raises(AccessDenied, match="'mallory' may not read model 'personality/luna'"):
        ModelManager().load_model("personality", "luna", user="mallory")
    with acting_as("mallory"), pytest.raises(AccessDenied):
        ModelManager().load_model("personality", "luna_personality")
    assert denials("mallory") == ["load", "load"]


def test_warm_cached_load_is_still_checked(policy) -> None:
    manager = ModelManager()
    manager.load_model("personality", "luna")
    with pytest.raises(AccessDenied):
        manager.load_model("personality", "luna", user="mallory")
    assert denials("mallory") == ["load"]


def test_generation_needs_generate(policy) -> None:
    model = ModelManager().load_model("personality", "luna", user="rita")  # rita may read
    with acting_as("rita"):
        with pytest.raises(AccessDenied, match="may not generate"):
            model.generate("The", max_length=2)
        with pytest.raises(AccessDenied):
            model.stream("The", max_length=2)
        with pytest.raises(AccessDenied):
            model.chat([{"role": "user", "content": "hi"}], max_length=2)
    assert denials("rita") == ["generate", "stream", "chat"]
    assert isinstance(model.generate("The", max_length=2), str)  # the local owner still may


def test_training_hook_denies_and_logs(policy) -> None:
    with pytest.raises(AccessDenied, match="may not train"):
        require("rita", "personality/luna", "train")
    assert denials("rita") == ["train"]
    assert require(None, "personality/luna", "train") == "local"


def test_version_changes_need_train_or_admin(policy) -> None:
    owner = ModelVersionControl()
    owner.create_version("luna", "one")
    owner.create_version("luna", "two")
    vc = ModelVersionControl(user="rita")
    with pytest.raises(AccessDenied, match="may not train"):
        vc.create_version("luna", "three")
    with pytest.raises(AccessDenied, match="may not admin"):
        vc.rollback_version("luna", "1.0.0")
    with pytest.raises(AccessDenied):
        vc.set_alias("luna", "production", "1.0.0")
    with pytest.raises(AccessDenied):
        vc.tag("luna", "1.0.0", "approved")
    with pytest.raises(AccessDenied):
        vc.delete_version("luna", "1.0.0")
    assert owner.aliases("luna") == {"current": "1.1.0"}
    assert [v.version for v in owner.list_versions("luna")] == ["1.0.0", "1.1.0"]
    assert denials("rita") == ["create_version", "rollback", "set_alias:production", "tag:approved", "delete_version"]
    assert owner.rollback_version("luna", "1.0.0")  # the owner may


def test_updates_need_admin_on_every_model(policy) -> None:
    from models.update_manager import AvailableUpdate, ModelUpdateManager

    ModelVersionControl().create_version("luna", "one")
    update = AvailableUpdate("x", "personality", "luna", "2.0.0", "1.0.0", "", (), 1, "k")
    with pytest.raises(AccessDenied, match="may not admin"):
        ModelUpdateManager(user="rita").apply_updates([update])
    assert denials("rita") == ["apply_update:2.0.0"]
    assert ModelVersionControl().aliases("luna") == {"current": "1.0.0"}


def test_database_grants_take_effect_and_revoke(policy) -> None:
    sm = ModelSecurityManager()
    sm.grant("rita", "personality/luna", "generate")
    model = ModelManager().load_model("personality", "luna", user="rita")
    with acting_as("rita"):
        assert isinstance(model.generate("The", max_length=2), str)
    assert sm.revoke("rita", "personality/luna") == 1
    with acting_as("rita"), pytest.raises(AccessDenied):
        model.generate("The", max_length=2)
    with pytest.raises(AccessDenied):  # only an admin may grant
        sm.grant("rita", "*", "admin", actor="rita")


def test_deny_rule_in_config_beats_the_owner(user_config, database) -> None:
    user_config(READER + "  deny:\n    - {users: [local], models: 'personality/luna', level: generate}\n")
    model = ModelManager().load_model("personality", "luna")
    with pytest.raises(AccessDenied, match="config deny"):
        model.generate("The", max_length=2)


def test_access_list_shows_database_rules(policy) -> None:
    """Issue 15 item 10: `companion access list` crashed (YAML could not represent SQLAlchemy's
    row keys) as soon as one database rule existed."""
    import json

    from typer.testing import CliRunner

    from companion.cli import app

    runner = CliRunner()
    granted = runner.invoke(app, ["access", "grant", "rita", "personality/luna", "generate"])
    assert granted.exit_code == 0, granted.output
    shown = runner.invoke(app, ["access", "list"])
    assert shown.exit_code == 0, shown.output
    assert "rita" in shown.output and "personality/luna" in shown.output
    as_json = runner.invoke(app, ["access", "list", "--json"])
    rules = json.loads(as_json.stdout)["database"]
    assert [(r["user_id"], r["models"], r["level"]) for r in rules] == [("rita", "personality/luna", "generate")]
