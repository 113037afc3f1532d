"""PrivacyManager: anonymization, consent, data-subject rights, retention and compliance checks.

    privacy_manager = PrivacyManager()
    anonymized = privacy_manager.anonymize_data(raw_data=conversation_data, anonymization_level="high")
    status = privacy_manager.check_compliance(model_name="user_personalization", privacy_standards=["GDPR", "CCPA"])
    privacy_manager.record_consent("user123", "training")
    archive = privacy_manager.export_user_data("user123")     # one zip: export.json with every store
    result = privacy_manager.erase_user_data("user123")       # every store; result.models: retrain these

**Lineage.** A trained version lists whose data it learned from in `lineage["data_subjects"]`
(subject references from `subject_ref(user_id)`, or plain user ids) and how its data was
anonymized in `lineage["anonymization"]` (the preprocessing report's dict). Erasure finds every
version whose lineage names the user, tags it `retrain_required` and replaces the user's
reference in the stored lineage; the caller retrains (or retires) those models.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, insert, select, update

from models import db
from models.errors import PrivacyError
from models.privacy.settings import DATA_CATEGORIES, PrivacyConfig
from models.privacy.stores import check_user_id, stores, user_folder

__all__ = ["PURPOSES", "ErasureResult", "PrivacyManager", "subject_ref"]

#: Purposes consent is recorded for (GDPR Art. 6(1)(a), 7); `ccpa_opt_out` records a CCPA
#: 1798.120 request not to sell or share the user's personal information.
PURPOSES = ("training", "personalization", "analytics", "ccpa_opt_out")


def subject_ref(user_id: str, home: Path | None = None) -> str:
    """The reference a model's lineage stores for a user: keyed (HMAC) so lineage alone names nobody."""
    from models.privacy.anonymizer import pseudonym_key

    digest = hmac.new(pseudonym_key(home), f"subject\x00{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"subj_{digest[:24]}"


@dataclass
class ErasureResult:
    """What `erase_user_data` removed, and the model versions trained on the user's data."""

    user_ref: str
    removed: dict[str, dict[str, int]]
    models: list[str] = field(default_factory=list)
    at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PrivacyManager:
    """Privacy operations over one COMPANION_HOME (and its database)."""

    def __init__(self, config_path: str | Path | None = None, *, database_url: str | None = None) -> None:
        from models.home import companion_home

        self._config_path = config_path
        self.home = companion_home()
        self._url = database_url

    # -- settings ---------------------------------------------------------------------------

    @property
    def config(self) -> Any:
        from models.config import load_effective_config

        return load_effective_config(self._config_path)

    @property
    def settings(self) -> PrivacyConfig:
        return self.config.privacy

    @property
    def url(self) -> str:
        if self._url is None:
            self._url = os.environ.get(db.DATABASE_URL_ENV) or self.config.config.database_url or db.default_url()
        return self._url

    @property
    def engine(self) -> Any:
        return db.connect(self.url)

    def _audit(self, user: str, action: str, model: str = "privacy", **detail: Any) -> None:
        from models.audit import AuditLog

        AuditLog(self.url, home=self.home).append(user, model, action, detail=detail or None)

    def _authorize(self, user_id: str, action: str) -> str:
        """Data-subject requests: the user themself, or someone with `admin` on every model."""
        from models.security.identity import current_user
        from models.security.manager import ModelSecurityManager

        actor = current_user(None, self.config.security.local_user)
        if actor != user_id:
            ModelSecurityManager(database_url=self.url, policy=self.config.security).require(
                actor, "*", "admin", action=action
            )
        return actor

    # -- anonymization ----------------------------------------------------------------------

    def anonymize_data(self, raw_data: Any, anonymization_level: str = "high", **options: Any) -> Any:
        """`raw_data` (a string, record, conversation, list or `datasets.Dataset`) with personal
        data replaced at `low`, `medium` or `high` (see models.privacy.anonymizer)."""
        from models.privacy.anonymizer import Anonymizer

        options.setdefault("spacy_model", self.settings.spacy_model)
        options.setdefault("allow", self.character_names())
        return Anonymizer(anonymization_level, **options).anonymize_data(raw_data)

    def character_names(self) -> list[str]:
        """Names of the configured personalities (Luna, ...): characters, not data subjects, so
        they are kept. Add your own with `allow=[...]`."""
        cfg = self.config
        return [n.capitalize() for n in cfg.names("personality")] if "personality" in cfg.categories() else []

    # -- consent ----------------------------------------------------------------------------

    def record_consent(self, user_id: str, purpose: str, source: str = "api") -> None:
        """Record that `user_id` consents to `purpose` now (an open consent is kept, not duplicated)."""
        check_user_id(user_id)
        if purpose not in PURPOSES:
            raise PrivacyError(f"consent purpose {purpose!r}: use one of {', '.join(PURPOSES)}")
        t = db.consents
        with db.write_transaction(self.engine) as conn:
            open_ = conn.scalar(
                select(t.c.id).where(t.c.user_id == user_id, t.c.purpose == purpose, t.c.withdrawn_at.is_(None))
            )
            if open_ is None:
                conn.execute(insert(t).values(user_id=user_id, purpose=purpose, granted_at=db.utc_now(), source=source))
        self._audit(user_id, f"consent:{purpose}")

    def withdraw_consent(self, user_id: str, purpose: str) -> int:
        """Withdraw every open consent of `user_id` for `purpose`; returns how many."""
        t = db.consents
        with db.write_transaction(self.engine) as conn:
            n = conn.execute(
                update(t)
                .where(t.c.user_id == user_id, t.c.purpose == purpose, t.c.withdrawn_at.is_(None))
                .values(withdrawn_at=db.utc_now())
            ).rowcount
        self._audit(user_id, f"withdraw:{purpose}", records=n)
        return n

    def consents(self, user_id: str | None = None) -> list[dict[str, Any]]:
        t = db.consents
        q = select(t).order_by(t.c.id)
        if user_id is not None:
            q = q.where(t.c.user_id == user_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def has_consent(self, user_id: str, purpose: str) -> bool:
        t = db.consents
        with self.engine.connect() as conn:
            return (
                conn.scalar(
                    select(t.c.id).where(t.c.user_id == user_id, t.c.purpose == purpose, t.c.withdrawn_at.is_(None))
                )
                is not None
            )

    # -- lineage ----------------------------------------------------------------------------

    def versions(self, category: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        t = db.model_versions
        q = select(t)
        if category is not None and name is not None:
            q = q.where(and_(t.c.category == category, t.c.name == name))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(t.c.id)).mappings()]

    def subjects_of(self, lineage: Any) -> list[str]:
        """The data subjects a lineage records (`data_subjects`, `users` or `user_ids`, at any depth)."""
        found: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if k in ("data_subjects", "users", "user_ids") and isinstance(v, list):
                        found.extend(str(x) for x in v)
                    elif k == "user_id" and isinstance(v, str):
                        found.append(v)
                    else:
                        walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(lineage or {})
        return list(dict.fromkeys(found))

    def models_trained_on(self, user_id: str) -> list[dict[str, Any]]:
        """Every registered version whose lineage includes `user_id` (by id or `subject_ref`)."""
        refs = {user_id, subject_ref(user_id, self.home)}
        return [r for r in self.versions() if refs & set(self.subjects_of(r["lineage"]))]

    # -- export and erasure -----------------------------------------------------------------

    def export_user_data(self, user_id: str, dest: str | Path | None = None) -> Path:
        """Everything held about `user_id` as one zip (`export.json`, machine-readable; GDPR Art.
        15 and 20, CCPA 1798.110). Default place: the user's own folder, so erasure removes it."""
        check_user_id(user_id)
        actor = self._authorize(user_id, "export")
        data: dict[str, Any] = {
            "format": "companion-user-export/1",
            "user_id": user_id,
            "exported_at": db.utc_now(),
            "stores": {s.name: s.export(user_id) for s in stores(self.url, self.home)},
            "consents": self.consents(user_id),
            "models_trained_on_user_data": [
                f"{r['category']}/{r['name']}@{r['version']}" for r in self.models_trained_on(user_id)
            ],
        }
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        if dest is None:
            dest = user_folder(user_id, self.home) / "exports" / f"export-{stamp}.zip"
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"export-{user_id}-{stamp}.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(part, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("export.json", json.dumps(data, indent=2, ensure_ascii=False, default=str))
        os.replace(part, dest)
        self._audit(actor, "export", detail_user=subject_ref(user_id, self.home))
        return dest

    def erase_user_data(self, user_id: str) -> ErasureResult:
        """Remove the user's data from every store (GDPR Art. 17, CCPA 1798.105) and flag the
        model versions trained on it (`retrain_required` tag); returns what was done."""
        check_user_id(user_id)
        actor = self._authorize(user_id, "erase")
        ref = subject_ref(user_id, self.home)
        flagged = self._flag_models(user_id, ref, actor)
        removed = {s.name: s.erase(user_id) for s in stores(self.url, self.home)}
        result = ErasureResult(user_ref=ref, removed=removed, models=flagged, at=db.utc_now())
        # Logged without the user id (their audit subject was just forgotten).
        self._audit(actor if actor != user_id else "erased-user", "erase", subject=ref, models=len(flagged))
        return result

    def _flag_models(self, user_id: str, ref: str, actor: str) -> list[str]:
        t, tags = db.model_versions, db.version_tags
        out = []
        rows = self.models_trained_on(user_id)
        with db.write_transaction(self.engine) as conn:
            for r in rows:
                lineage = _replace_exact(r["lineage"], {user_id, ref}, "erased-subject")
                conn.execute(update(t).where(t.c.id == r["id"]).values(lineage=lineage))
                _rewrite_version_file(Path(r["path"]), {user_id, ref})
                key = and_(
                    tags.c.category == r["category"],
                    tags.c.name == r["name"],
                    tags.c.version == r["version"],
                    tags.c.key == "retrain_required",
                )
                conn.execute(delete(tags).where(key))
                conn.execute(
                    insert(tags).values(
                        category=r["category"],
                        name=r["name"],
                        version=r["version"],
                        key="retrain_required",
                        value=f"data of an erased user ({ref}) is in its training lineage",
                        actor=actor,
                        updated_at=db.utc_now(),
                    )
                )
                out.append(f"{r['category']}/{r['name']}@{r['version']}")
        return out

    # -- retention --------------------------------------------------------------------------

    def sweep(self, now: datetime | None = None) -> dict[str, int]:
        """Delete (or, for the audit chain, un-name) data older than its retention period."""
        now = now or datetime.now(UTC)
        removed: dict[str, int] = {}
        retention = self.settings.retention
        with db.write_transaction(self.engine) as conn:
            for category, days in retention.items():
                cutoff = (now - timedelta(days=days)).isoformat(timespec="microseconds")
                n = 0
                if category in ("generation_events", "evaluation_runs") and category in db.metadata.tables:
                    table = db.metadata.tables[category]
                    n = conn.execute(delete(table).where(table.c.at < cutoff)).rowcount
                elif category == "consents":
                    t = db.consents
                    n = conn.execute(delete(t).where(t.c.withdrawn_at.is_not(None), t.c.withdrawn_at < cutoff)).rowcount
                elif category == "audit_log":
                    n = self._forget_idle_subjects(conn, cutoff)
                removed[category] = n
        if "raw_data" in retention:
            removed["raw_data"] = self._sweep_raw(now - timedelta(days=retention["raw_data"]))
        with db.write_transaction(self.engine) as conn:
            t = db.privacy_state
            conn.execute(delete(t).where(t.c.key == "last_sweep"))
            conn.execute(insert(t).values(key="last_sweep", value=json.dumps(removed), updated_at=db.utc_now()))
        self._audit(self._actor(), "sweep", **removed)
        return removed

    def _actor(self) -> str:
        from models.security.identity import current_user

        return current_user(None, self.config.security.local_user)

    @staticmethod
    def _forget_idle_subjects(conn: Any, cutoff: str) -> int:
        from sqlalchemy import func

        log, subj = db.audit_log, db.audit_subjects
        last = select(log.c.subject, func.max(log.c.at).label("last")).group_by(log.c.subject).subquery()
        idle = [r.subject for r in conn.execute(select(last.c.subject).where(last.c.last < cutoff))]
        if not idle:
            return 0
        return conn.execute(delete(subj).where(subj.c.subject.in_(idle))).rowcount

    def _sweep_raw(self, cutoff: datetime) -> int:
        n = 0
        for path in (self.home / "users").glob("*/raw/**/*"):
            if path.is_file() and not path.is_symlink() and datetime.fromtimestamp(path.stat().st_mtime, UTC) < cutoff:
                path.unlink()
                n += 1
        return n

    def last_sweep(self) -> str | None:
        t = db.privacy_state
        with self.engine.connect() as conn:
            return conn.scalar(select(t.c.updated_at).where(t.c.key == "last_sweep"))

    # -- records and compliance ---------------------------------------------------------------

    def record_of_processing(self) -> dict[str, Any]:
        """An Art. 30(1) GDPR-style record of processing activities, from the live configuration."""
        s = self.settings
        return {
            "controller": "the operator of this installation (COMPANION_HOME)",
            "purposes": {
                "training": "fine-tuning personality and personalization models on collected text",
                "personalization": "adapting responses to one user's feedback and preferences",
                "analytics": "latency and quality monitoring (pseudonymized user references)",
            },
            "data_subjects": "users of the companion; authors of collected chat logs",
            "data_categories": DATA_CATEGORIES,
            "recipients": "none outside this installation; model versions published with "
            "`companion updates publish` contain weights, not raw data",
            "transfers_to_third_countries": "none",
            "retention_days": s.retention or "not configured (kept until erased)",
            "security_measures": {
                "anonymization_before_training": s.training_anonymization,
                "encryption_at_rest": s.encrypt_at_rest,
                "access_control": "deny-by-default role policy (models.security)",
                "audit": "hash-chained, signed-checkpoint audit log (models.audit)",
            },
            "generated_at": db.utc_now(),
        }

    def check_compliance(
        self, model_name: str, privacy_standards: list[str] | tuple[str, ...] = ("GDPR", "CCPA")
    ) -> Any:
        """Each check of each standard computed from the current state, with its evidence."""
        from models.privacy.compliance import evaluate

        return evaluate(self, model_name, list(privacy_standards))


def _replace_exact(node: Any, values: set[str], by: str) -> Any:
    """`node` with every string equal to one of `values` replaced by `by` (keys included)."""
    if isinstance(node, str):
        return by if node in values else node
    if isinstance(node, dict):
        return {_replace_exact(k, values, by): _replace_exact(v, values, by) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_exact(v, values, by) for v in node]
    return node


def _rewrite_version_file(folder: Path, values: set[str]) -> None:
    """Replace the user's references in a version's `version.json` too (it is not in the
    manifest; the read-only folder is opened for the one atomic replace)."""
    from models.lifecycle.version_records import VERSION_FILE, write_json_atomic

    path = folder / VERSION_FILE
    if not path.is_file():
        return
    meta = json.loads(path.read_text(encoding="utf-8"))
    new = _replace_exact(meta, values, "erased-subject")
    if new == meta:
        return
    mode = folder.stat().st_mode
    os.chmod(folder, mode | 0o200)
    try:
        write_json_atomic(path, new)
        os.chmod(path, 0o444)
    finally:
        os.chmod(folder, mode)
