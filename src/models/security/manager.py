"""ModelSecurityManager: decide, enforce and log who may do what to which model.

    security_manager = ModelSecurityManager()
    security_manager.check_access(user_id="user123", model_name="luna_personality", access_level="read")
    security_manager.log_access(user_id="user123", model_name="luna_personality", action="generate_response")

The policy is `security:` in the built-in config (the local owner's grant) with the user's
config.yaml on top, plus the rules `companion access grant|revoke` keep in the database (see
`models.security.policy` for the rules). `check_access` answers and logs; `require` answers,
logs and raises `AccessDenied`. Every decision of `check_access`/`require` appends one row to
the audit chain (`models.audit`), allowed or denied.

Enforcement points (each calls `require(user, model, level)`):

    ModelManager.load_model                  read      (cold loads; a cached load re-checks in memory)
    generation on a loaded model             generate  (generate/stream/chat/... and composite
                                                        request methods such as generate_response)
    training (models.training)               train     call `require(user, model, "train")` first
    ModelVersionControl.create_version       train
    set_alias / rollback_version / tag /
      delete_version                         admin
    ModelUpdateManager.apply_updates         admin     (every update's model, before any work)
    the HTTP server                          per route, with the API key's user
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import delete, insert, select

from models import db
from models.errors import AccessDenied, ConfigError
from models.gate import guard, inside_checked_call
from models.security.identity import current_user
from models.security.policy import LEVELS, Decision, SecurityConfig, decide, level_rank

__all__ = [
    "ModelSecurityManager",
    "get_security_manager",
    "guard_model",
    "inside_checked_call",
    "require",
    "require_access",
]

RULES_TTL = 1.0  # seconds a process reuses the database rules it read
_RULES_CHANGED = [0]  # bumped when this process changes the rules: every manager re-reads them


class ModelSecurityManager:
    """Role-based access to models, deny by default, with every decision audited."""

    def __init__(
        self,
        config_path: str | None = None,
        *,
        manager: Any = None,
        database_url: str | None = None,
        policy: SecurityConfig | None = None,
    ) -> None:
        self._config_path = config_path
        self._manager = manager
        self._policy = policy
        self._url = database_url
        self._audit: Any = None
        self._lock = threading.Lock()
        self._rules: tuple[float, list[tuple[str, str, str]], list[tuple[str, str, str]], int] | None = None
        self._names: dict[str, list[str]] = {}
        self._names_of: Any = None

    # -- inputs -----------------------------------------------------------------------------

    @property
    def manager(self) -> Any:
        if self._manager is None:
            from models.model_manager import ModelManager

            self._manager = ModelManager(self._config_path)
        return self._manager

    @property
    def policy(self) -> SecurityConfig:
        """The effective policy (built-in layer + the user's), re-read when a config file changes."""
        if self._policy is not None:
            return self._policy
        return self.manager.config.security

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = self.manager.context.database_url_for(self.manager.config)
        return self._url

    @property
    def audit(self) -> Any:
        if self._audit is None:
            from models.audit import AuditLog

            every = self.policy.audit.checkpoint_every if self.policy.audit else 100
            self._audit = AuditLog(self.url, checkpoint_every=every)
        return self._audit

    def user(self, user_id: str | None = None) -> str:
        """The acting user (see `models.security.identity`)."""
        return current_user(user_id, self.policy.local_user)

    def names(self, model_name: str) -> list[str]:
        """Every name a policy pattern is matched against: `category/name`, `name`, as asked."""
        from models.paths import name_candidates

        try:
            cfg = self.manager.config
        except ConfigError:
            cfg = None
        if cfg is not self._names_of:  # the config changed: names may resolve differently
            self._names, self._names_of = {}, cfg
        if model_name in self._names:
            return self._names[model_name]
        out = [model_name]
        if "/" in model_name:
            cat, bare = model_name.split("/", 1)
            out += [f"{cat}/{c}" for c in name_candidates(bare, cat)] + list(name_candidates(bare, cat))
        elif cfg is not None:
            for cat in cfg.categories():
                for cand in name_candidates(model_name, cat):
                    if cfg.entry(cat, cand) is not None:
                        out += [f"{cat}/{cand}", cand]
        self._names[model_name] = found = list(dict.fromkeys(out))
        return found

    def _db_rules(self) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
        """The database rules, re-read at most every RULES_TTL seconds (at once after this
        process changes them; another process's change shows within RULES_TTL)."""
        now = time.monotonic()
        cached = self._rules
        if cached is not None and now - cached[0] < RULES_TTL and cached[3] == _RULES_CHANGED[0]:
            return cached[1], cached[2]
        t = db.access_rules
        with db.connect(self.url).connect() as conn:
            rows = conn.execute(select(t.c.effect, t.c.user_id, t.c.models, t.c.level)).all()
        grants = [(r.user_id, r.models, r.level) for r in rows if r.effect == "grant"]
        denies = [(r.user_id, r.models, r.level) for r in rows if r.effect == "deny"]
        self._rules = (now, grants, denies, _RULES_CHANGED[0])
        return grants, denies

    # -- deciding ---------------------------------------------------------------------------

    def decide(self, user_id: str, model_name: str, access_level: str) -> Decision:
        """The decision and its reason, without logging it."""
        try:
            level_rank(access_level)
        except ValueError as exc:
            raise AccessDenied(user_id, model_name, access_level, str(exc)) from None
        grants, denies = self._db_rules()
        return decide(self.policy, user_id, self.names(model_name), access_level, grants, denies)

    def check_access(
        self, user_id: str | None, model_name: str, access_level: str = "read", *, action: str | None = None
    ) -> bool:
        """True if `user_id` may use `access_level` on `model_name`; the decision is audited."""
        user = self.user(user_id)
        decision = self.decide(user, model_name, access_level)
        self._log(user, model_name, action or f"check:{access_level}", access_level, decision)
        return decision.allowed

    def require(self, user_id: str | None, model_name: str, access_level: str, *, action: str | None = None) -> str:
        """Like `check_access`, but raise `AccessDenied` when denied; returns the acting user."""
        user = self.user(user_id)
        decision = self.decide(user, model_name, access_level)
        self._log(user, model_name, action or access_level, access_level, decision)
        if not decision.allowed:
            raise AccessDenied(user, model_name, access_level, decision.reason)
        return user

    def _log(self, user: str, model: str, action: str, level: str, decision: Decision) -> None:
        self.audit.append(user, model, action, level=level, allowed=decision.allowed, detail={"rule": decision.reason})

    def log_access(self, user_id: str | None, model_name: str, action: str, **detail: Any) -> int:
        """Append an entry for something done with a model (no decision); returns its seq."""
        return self.audit.append(self.user(user_id), model_name, action, detail=detail or None)

    # -- database rules (`companion access grant|revoke`) -------------------------------------

    def grant(self, user_id: str, models: str, level: str, *, actor: str | None = None, deny: bool = False) -> None:
        """Add a database rule; only a user with `admin` on the pattern may do so."""
        from models.security.policy import Grant

        Grant(models=models, level=level)  # validates pattern and level
        who = self.require(actor, models, "admin", action="deny" if deny else "grant")
        with db.write_transaction(db.connect(self.url)) as conn:
            t = db.access_rules
            effect = "deny" if deny else "grant"
            exists = conn.scalar(
                select(t.c.id).where(
                    t.c.effect == effect, t.c.user_id == user_id, t.c.models == models, t.c.level == level
                )
            )
            if exists is None:
                conn.execute(
                    insert(t).values(
                        effect=effect, user_id=user_id, models=models, level=level, actor=who, at=db.utc_now()
                    )
                )
        _RULES_CHANGED[0] += 1
        self.audit.append(who, models, f"{effect}:{level}", detail={"for_user": user_id})

    def revoke(self, user_id: str, models: str, level: str | None = None, *, actor: str | None = None) -> int:
        """Remove database rules (grants and denies) of `user_id` on `models`; returns how many."""
        who = self.require(actor, models, "admin", action="revoke")
        t = db.access_rules
        cond = [t.c.user_id == user_id, t.c.models == models]
        if level is not None:
            cond.append(t.c.level == level)
        with db.write_transaction(db.connect(self.url)) as conn:
            n = conn.execute(delete(t).where(*cond)).rowcount
        _RULES_CHANGED[0] += 1
        self.audit.append(who, models, "revoke", detail={"for_user": user_id, "rules": n})
        return n

    def rules(self) -> list[dict[str, str]]:
        """The database rules, for `companion access list`."""
        t = db.access_rules
        with db.connect(self.url).connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id)).mappings()
            # Plain str keys and JSON-able values: SQLAlchemy's key type is not YAML-representable.
            return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


# ----------------------------------------------------------------------------- module helpers


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


_DEFAULT: list[tuple[ModelSecurityManager, tuple[str | None, str | None]]] = []
_DEFAULT_LOCK = threading.Lock()


def get_security_manager() -> ModelSecurityManager:
    """The process-wide manager over the default config (its policy follows config edits)."""
    from models.context import current

    return current().security


def require(user: str | None, model: str, level: str, *, action: str | None = None) -> str:
    """The one-call hook: raise `AccessDenied` unless the policy grants `user` (None: the acting
    user) `level` on `model`; the decision is audited. Returns the acting user.

    Training code calls `require(user, "personality/luna", "train")` before it reads any data.
    """
    if level not in LEVELS:
        raise AccessDenied(str(user), model, level, f"unknown level; use one of {', '.join(LEVELS)}")
    return get_security_manager().require(user, model, level, action=action)


require_access = require  # the name the trainer imports


def guard_model(model: Any, security: ModelSecurityManager, category: str, name: str) -> Any:
    """Make `model`'s gate (`models.gate`) check `generate` on `category/name` for every call of
    every generating method, and for its engine or base model. Idempotent."""
    return guard(model, security, category, name)
