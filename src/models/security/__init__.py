"""Access control: `ModelSecurityManager` (the seed's import path), the policy and the acting user.

    from models.security import ModelSecurityManager
    security_manager = ModelSecurityManager()
    security_manager.check_access(user_id="user123", model_name="luna_personality", access_level="read")

Module attributes load on first use, so `models.config` can import the policy schema
(`models.security.policy`) without pulling in the database layer.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "LEVELS",
    "AccessDenied",
    "ModelSecurityManager",
    "SecurityConfig",
    "acting_as",
    "current_user",
    "get_security_manager",
    "require",
    "require_access",
]

_WHERE = {
    "LEVELS": "models.security.policy",
    "SecurityConfig": "models.security.policy",
    "AccessDenied": "models.errors",
    "ModelSecurityManager": "models.security.manager",
    "get_security_manager": "models.security.manager",
    "require": "models.security.manager",
    "require_access": "models.security.manager",
    "acting_as": "models.security.identity",
    "current_user": "models.security.identity",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'models.security' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
