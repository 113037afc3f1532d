"""The `security:` section of config.yaml and the evaluator that decides one request.

    security:
      local_user: local                 # who acts when no user is named (see docs/security.md)
      roles:
        owner:  [{models: "*", level: admin}]
        writer: [{models: "personality/*", level: generate}]
      users:
        local:   {roles: [owner]}       # the built-in layer ships exactly this grant
        user123: {roles: [writer], grants: [{models: "luna", level: train}]}
        "*":     {grants: [{models: "base/*", level: read}]}   # everyone
      deny:
        - {users: ["mallory"], models: "*", level: read}
      audit:
        checkpoint_every: 100

Levels are ordered `read < generate < train < admin`. A grant of a level allows it and every
lower one; a deny rule of a level blocks it and every higher one (deny `train` on `base/*`
still lets the user read and generate). Deny rules win over grants; anything not granted is
denied. Model patterns are shell-style (`fnmatch`, case-sensitive) and are matched against the
canonical `category/name`, the bare `name` and the name as asked (`luna_personality`).
Kept free of imports from the rest of the package so `models.config` can embed it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "LEVELS",
    "AuditSettings",
    "Decision",
    "Grant",
    "Rule",
    "SecurityConfig",
    "UserPolicy",
    "decide",
    "level_rank",
]

LEVELS: tuple[str, ...] = ("read", "generate", "train", "admin")


def level_rank(level: str) -> int:
    """0 for read ... 3 for admin; ValueError naming the valid levels otherwise."""
    try:
        return LEVELS.index(level)
    except ValueError:
        raise ValueError(f"unknown access level {level!r}: use one of {', '.join(LEVELS)}") from None


def _check_pattern(pattern: str) -> str:
    if not pattern or not pattern.strip() or any(c in pattern for c in "\n\r\t"):
        raise ValueError(f"model pattern {pattern!r} must be a non-empty name or glob, e.g. 'personality/*'")
    return pattern


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Grant(_Strict):
    """`level` (and every lower level) on the models matching `models`."""

    models: str = Field(description="Model name or glob: 'luna', 'personality/*', '*'.")
    level: str = Field(description="read | generate | train | admin")

    @field_validator("models")
    @classmethod
    def _models(cls, v: str) -> str:
        return _check_pattern(v)

    @field_validator("level")
    @classmethod
    def _level(cls, v: str) -> str:
        level_rank(v)
        return v


class Rule(Grant):
    """A deny rule: `users` may not use `level` (or any higher level) on `models`."""

    users: list[str] = Field(default_factory=lambda: ["*"], description="User ids or globs; '*' is everyone.")


class UserPolicy(_Strict):
    roles: list[str] = Field(default_factory=list, description="Role names defined under security.roles.")
    grants: list[Grant] = Field(default_factory=list, description="Grants for this user alone.")


class AuditSettings(_Strict):
    checkpoint_every: int = Field(100, ge=1, le=1_000_000, description="Sign a checkpoint every N audit rows.")


class SecurityConfig(_Strict):
    """Who may do what to which model. Deny by default."""

    local_user: str | None = Field(
        None, description="The user acting when none is named and $COMPANION_USER is unset (default 'local')."
    )
    roles: dict[str, list[Grant]] = Field(default_factory=dict)
    users: dict[str, UserPolicy] = Field(default_factory=dict)
    deny: list[Rule] = Field(default_factory=list)
    audit: AuditSettings | None = None

    @field_validator("users")
    @classmethod
    def _user_ids(cls, users: dict[str, UserPolicy]) -> dict[str, UserPolicy]:
        from models.users import check_user_id

        for uid in users:
            if not any(c in uid for c in "*?["):  # a pattern, not an id
                check_user_id(uid)
        return users

    def problems(self) -> list[str]:
        """Cross-references a field validator cannot see (a user naming an undefined role)."""
        out = []
        for uid, pol in self.users.items():
            for role in pol.roles:
                if role not in self.roles:
                    known = ", ".join(sorted(self.roles)) or "none"
                    out.append(f"security.users.{uid}.roles: unknown role {role!r} (defined roles: {known})")
        return out

    def merged(self, over: SecurityConfig) -> SecurityConfig:
        """This layer with `over` on top: roles and users replaced by name, deny rules added."""
        return SecurityConfig(
            local_user=over.local_user or self.local_user,
            roles={**self.roles, **over.roles},
            users={**self.users, **over.users},
            deny=[*self.deny, *over.deny],
            audit=over.audit or self.audit,
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of one access request and the rule that decided it (for the audit log)."""

    allowed: bool
    reason: str

    def __bool__(self) -> bool:
        return self.allowed


def _matches(pattern: str, names: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def decide(
    policy: SecurityConfig,
    user: str,
    names: Iterable[str],
    level: str,
    extra_grants: Iterable[tuple[str, str, str]] = (),
    extra_denies: Iterable[tuple[str, str, str]] = (),
) -> Decision:
    """Whether `user` may use `level` on the model known by `names`.

    `extra_grants`/`extra_denies` are `(user_or_glob, model_glob, level)` rules kept in the
    database by `companion access grant/revoke --deny`.
    """
    want = level_rank(level)
    names = list(names)
    denies = [(r.users, r.models, r.level, "config deny") for r in policy.deny]
    denies += [([u], m, lvl, "database deny") for u, m, lvl in extra_denies]
    for users, pattern, lvl, where in denies:
        if _matches(pattern, names) and any(fnmatch.fnmatchcase(user, u) for u in users) and want >= level_rank(lvl):
            return Decision(False, f"{where} rule {lvl} on {pattern!r}")
    for uid in (user, "*"):
        pol = policy.users.get(uid)
        if pol is None:
            continue
        grants = [(g, f"user {uid!r}") for g in pol.grants]
        grants += [(g, f"role {r!r}") for r in pol.roles for g in policy.roles.get(r, [])]
        for g, via in grants:
            if _matches(g.models, names) and level_rank(g.level) >= want:
                return Decision(True, f"{via} grants {g.level} on {g.models!r}")
    for u, m, lvl in extra_grants:
        if fnmatch.fnmatchcase(user, u) and _matches(m, names) and level_rank(lvl) >= want:
            return Decision(True, f"database grant {lvl} on {m!r}")
    return Decision(False, "no grant (deny by default)")
