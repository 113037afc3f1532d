"""The policy evaluator and the `security:` config section."""

from __future__ import annotations

import pytest

from models.config import load_effective_config
from models.errors import AccessDenied, ConfigError
from models.security.policy import SecurityConfig, decide

POLICY = SecurityConfig.model_validate(
    {
        "roles": {
            "writer": [{"models": "personality/*", "level": "generate"}],
            "all": [{"models": "*", "level": "admin"}],
        },
        "users": {
            "ada": {"roles": ["writer"], "grants": [{"models": "personality/luna", "level": "train"}]},
            "root": {"roles": ["all"]},
            "*": {"grants": [{"models": "base/*", "level": "read"}]},
        },
        "deny": [
            {"users": ["ada"], "models": "personality/quill", "level": "generate"},
            {"users": ["*"], "models": "base/secret", "level": "read"},
        ],
    }
)


def names(label: str) -> list[str]:
    _cat, name = label.split("/")
    return [label, name]


@pytest.mark.parametrize(
    ("user", "model", "level", "allowed"),
    [
        ("ada", "personality/luna", "read", True),
        ("ada", "personality/luna", "train", True),
        ("ada", "personality/luna", "admin", False),  # a grant covers lower levels only
        ("ada", "personality/marlowe", "generate", True),
        ("ada", "personality/marlowe", "train", False),
        ("ada", "personality/quill", "read", True),  # deny generate blocks generate and up only
        ("ada", "personality/quill", "generate", False),
        ("ada", "personality/quill", "admin", False),
        ("bob", "personality/luna", "read", False),  # deny by default
        ("bob", "base/companion-base", "read", True),  # the "*" user's grant
        ("bob", "base/companion-base", "generate", False),
        ("root", "base/secret", "read", False),  # deny rules win over grants
        ("root", "personality/quill", "admin", True),
    ],
)
def test_levels_grants_and_denies(user: str, model: str, level: str, allowed: bool) -> None:
    assert decide(POLICY, user, names(model), level).allowed is allowed


def test_database_rules_and_unknown_levels() -> None:
    assert decide(POLICY, "bob", ["personality/luna"], "read", extra_grants=[("bob", "personality/*", "read")])
    assert not decide(POLICY, "root", ["x/y"], "read", extra_denies=[("root", "*", "read")])
    with pytest.raises(ValueError, match="unknown access level 'write'"):
        decide(POLICY, "ada", ["personality/luna"], "write")


def test_bad_security_config_names_file_and_key(user_config) -> None:
    user_config("security:\n  users:\n    ada: {roles: [writr]}\n  roles:\n    writer: [{models: '*', level: wrte}]\n")
    with pytest.raises(ConfigError) as info:
        load_effective_config()
    text = str(info.value)
    assert "config.yaml" in text and "security.roles.writer.0.level" in text


def test_undefined_role_is_reported(user_config) -> None:
    user_config("security:\n  users:\n    ada: {roles: [writer]}\n")
    with pytest.raises(ConfigError, match=r"security.users.ada.roles: unknown role 'writer'"):
        load_effective_config()


def test_builtin_layer_grants_the_local_owner_and_user_layers_merge(user_config) -> None:
    user_config("security:\n  users:\n    ada: {grants: [{models: luna, level: read}]}\n")
    policy = load_effective_config().security
    assert policy.local_user == "local" and policy.users["local"].roles == ["owner"]
    assert "ada" in policy.users


def test_seed_access_control_sample_runs_as_written() -> None:
    from models.security import ModelSecurityManager

    security_manager = ModelSecurityManager()

    # Check model access
    access_granted = security_manager.check_access(
        user_id="user123", model_name="luna_personality", access_level="read"
    )

    # Log model access
    security_manager.log_access(user_id="user123", model_name="luna_personality", action="generate_response")

    assert access_granted is False  # deny by default: user123 holds no grant
    rows = security_manager.audit.show(user="user123")
    assert [(r.action, r.allowed) for r in rows] == [("check:read", False), ("generate_response", None)]
    assert security_manager.check_access(user_id=None, model_name="luna_personality", access_level="admin")


def test_require_raises_access_denied_naming_user_model_level() -> None:
    from models.security import require, require_access

    with pytest.raises(AccessDenied, match=r"user 'mallory' may not train model 'personality/luna'"):
        require("mallory", "personality/luna", "train")
    with pytest.raises(AccessDenied):  # the name the trainer imports
        require_access("mallory", "luna", "train")


def test_public_api() -> None:
    import models.security as sec

    for name in sec.__all__:
        assert getattr(sec, name) is not None
