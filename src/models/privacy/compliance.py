"""`check_compliance`: GDPR and CCPA checks computed from the installation's real state.

Every check returns pass or fail with the evidence it looked at; nothing is assumed. Articles:
GDPR = Regulation (EU) 2016/679 (Art. 5 principles, 6-7 consent, 17 erasure, 25 data protection
by design, 30 records of processing, 32 security of processing); CCPA = Cal. Civ. Code
§ 1798.100-199 as amended by the CPRA (1798.105 deletion, 1798.110 right to know, 1798.120
opt-out of sale/sharing).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from models.errors import PrivacyError

__all__ = ["STANDARDS", "Check", "ComplianceReport", "evaluate"]

STANDARDS = {
    "GDPR": [
        ("lineage_anonymized", "Art. 25, 89(1)"),
        ("consent_on_record", "Art. 6(1)(a), 7"),
        ("retention_enforced", "Art. 5(1)(e)"),
        ("erasure_possible", "Art. 17"),
        ("audit_chain_verifies", "Art. 5(2)"),
        ("encryption_at_rest", "Art. 32(1)(a)"),
        ("record_of_processing", "Art. 30"),
    ],
    "CCPA": [
        ("opt_out_honoured", "1798.120"),
        ("erasure_possible", "1798.105"),
        ("export_possible", "1798.110"),
    ],
}


@dataclass
class Check:
    name: str
    standard: str
    reference: str
    passed: bool
    evidence: dict[str, Any]

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"


@dataclass
class ComplianceReport:
    """Per-check results; truthy only when every check passes."""

    model: str
    standards: list[str]
    checks: list[Check] = field(default_factory=list)

    @property
    def compliant(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def status(self) -> str:
        return "compliant" if self.compliant else "non-compliant"

    def __bool__(self) -> bool:
        return self.compliant

    def __getitem__(self, key: str) -> Any:  # dict-like access for scripts: report["status"]
        return self.to_json()[key]

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "standards": self.standards,
            "status": self.status,
            "compliant": self.compliant,
            "checks": [asdict(c) | {"status": c.status} for c in self.checks],
        }


def _model_versions(pm: Any, model_name: str) -> tuple[str, list[dict[str, Any]]]:
    from models.errors import CompanionError
    from models.lifecycle.version_control import ModelVersionControl

    try:
        category, name = ModelVersionControl().resolve_model(model_name)
    except CompanionError:
        return model_name, []
    return f"{category}/{name}", pm.versions(category, name)


def _training_data(lineage: Any) -> bool:
    """Whether a version was trained on collected data (the trainers record `data_sha256` and
    `data_source`; `data`, `datasets` and `data_subjects` are accepted too)."""
    keys = ("data", "datasets", "data_subjects", "data_sha256", "data_source")
    return isinstance(lineage, dict) and any(lineage.get(k) for k in keys)


def _anonymization_of(lineage: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "anonymization" and isinstance(v, dict):
                    found.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(lineage)
    return found


def _lineage_anonymized(pm: Any, label: str, versions: list[dict[str, Any]]) -> tuple[bool, dict[str, Any]]:
    trained = [v for v in versions if _training_data(v["lineage"])]
    if not trained:
        return True, {
            "versions": len(versions),
            "trained_on_data": 0,
            "note": f"no version of {label} was trained on collected data",
        }
    bad = []
    for v in trained:
        steps = _anonymization_of(v["lineage"])
        if not steps or not all(s.get("applied") for s in steps):
            bad.append(v["version"])
    return not bad, {"trained_versions": [v["version"] for v in trained], "not_anonymized_or_unrecorded": bad}


def _subjects(pm: Any, versions: list[dict[str, Any]]) -> list[str]:
    subjects: list[str] = []
    for v in versions:
        subjects += pm.subjects_of(v["lineage"])
    return list(dict.fromkeys(subjects))


def _known_users(pm: Any) -> dict[str, str]:
    """subject_ref → user id for every user with a consent record (to resolve lineage refs)."""
    from models.privacy.manager import subject_ref

    users = {c["user_id"] for c in pm.consents()}
    return {subject_ref(u, pm.home): u for u in users} | {u: u for u in users}


def _consent(pm: Any, versions: list[dict[str, Any]], purpose: str) -> tuple[bool, dict[str, Any]]:
    subjects = [s for s in _subjects(pm, versions) if s != "erased-subject"]
    known = _known_users(pm)
    missing = [s for s in subjects if s not in known or not pm.has_consent(known[s], purpose)]
    trained = [v for v in versions if _training_data(v["lineage"])]
    if trained and not subjects and any(v["lineage"].get("contains_user_data") for v in trained):
        return False, {"note": "lineage says user data was used but names no data subjects"}
    return not missing, {"data_subjects": len(subjects), "without_consent": missing, "purpose": purpose}


def _retention(pm: Any) -> tuple[bool, dict[str, Any]]:
    retention = pm.settings.retention
    last = pm.last_sweep()
    if not retention:
        return False, {"retention_days": {}, "last_sweep": last, "fix": "set privacy.retention in config.yaml"}
    ok = False
    if last is not None:
        ok = datetime.fromisoformat(last) >= datetime.now(UTC) - timedelta(days=min(retention.values()))
    return ok, {
        "retention_days": retention,
        "last_sweep": last,
        "note": "a sweep must run within the shortest retention period (`companion privacy sweep`)",
    }


def _erasure(pm: Any, versions: list[dict[str, Any]]) -> tuple[bool, dict[str, Any]]:
    from models.privacy.stores import DatabaseStore, stores

    tables = [f"{t.name}.{c}" for t, c in DatabaseStore(pm.url).tables()]
    trained = [v for v in versions if _training_data(v["lineage"])]
    # A version whose lineage declares it holds no user data (a character's authored lines) has no
    # subjects to trace; any other trained version must name them so erasure can reach it.
    untraceable = [
        v["version"]
        for v in trained
        if not pm.subjects_of(v["lineage"]) and v["lineage"].get("contains_user_data") is not False
    ]
    names = [s.name for s in stores(pm.url, pm.home)]
    return not untraceable, {
        "stores": names,
        "per_user_tables": tables,
        "per_user_folder": str(pm.home / "users" / "<user>"),
        "trained_versions_without_data_subjects": untraceable,
    }


def _audit(pm: Any) -> tuple[bool, dict[str, Any]]:
    from models.audit import AuditLog

    report = AuditLog(pm.url, home=pm.home).verify()
    return report.ok, report.to_json()


def _encryption(pm: Any) -> tuple[bool, dict[str, Any]]:
    from models.privacy.crypto import data_key_path, is_encrypted

    key = data_key_path(pm.home)
    enabled = pm.settings.encrypt_at_rest
    plain = []
    users = pm.home / "users"
    if users.is_dir():
        for path in users.rglob("*"):
            if not path.is_file() or path.is_symlink() or "exports" in path.parts:
                continue
            if path.suffix == ".safetensors" or (path.name.endswith(".json") and path.parent.name == "adapter"):
                continue  # adapter weights hold no text
            with path.open("rb") as f:
                if not is_encrypted(f.read(8)):
                    plain.append(str(path.relative_to(pm.home)))
    key_ok = key.exists() and (os.name != "posix" or key.stat().st_mode & 0o077 == 0)
    tables = _plaintext_rows(pm)
    return enabled and (key_ok or not users.is_dir()) and not plain and not tables, {
        "enabled": enabled,
        "key_file": str(key),
        "key_present_and_private": key_ok,
        "key_in_database": False,
        "unencrypted_user_files": plain[:20],
        "tables_with_plaintext_user_rows": tables,
    }


# Bookkeeping tables that must stay readable (ids, purposes, rules), not user content.
_BOOKKEEPING = {"consents", "audit_subjects", "access_rules"}


def _plaintext_rows(pm: Any) -> dict[str, int]:
    """Per-user tables whose free-text or JSON columns hold rows that are not Fernet tokens."""
    from sqlalchemy import JSON, Text, func, select

    from models import db
    from models.privacy.stores import DatabaseStore

    out: dict[str, int] = {}
    with db.connect(pm.url).connect() as conn:
        for table, col in DatabaseStore(pm.url).tables():
            if col != "user_id" or table.name in _BOOKKEEPING:
                continue
            content = [c for c in table.c if isinstance(c.type, Text | JSON) and c.name != "user_id"]
            if not content:
                continue
            n = 0
            for c in content:
                if isinstance(c.type, JSON):  # sealed JSON holds its token as a JSON string
                    values = conn.execute(select(c).where(c.is_not(None))).scalars()
                    n += sum(1 for v in values if not (isinstance(v, str) and v.startswith("gAAAAA")))
                else:
                    q = select(func.count()).select_from(table).where(c.is_not(None), c != "", ~c.startswith("gAAAAA"))
                    n += conn.scalar(q) or 0
            if n:
                out[table.name] = n
    return out


def _record(pm: Any) -> tuple[bool, dict[str, Any]]:
    record = pm.record_of_processing()
    needed = ("purposes", "data_subjects", "data_categories", "recipients", "retention_days", "security_measures")
    missing = [k for k in needed if not record.get(k)]
    return not missing, {
        "fields": sorted(record),
        "missing": missing,
        "export": "companion privacy compliance --record",
    }


def _opt_out(pm: Any, versions: list[dict[str, Any]]) -> tuple[bool, dict[str, Any]]:
    known = _known_users(pm)
    opted = [s for s in _subjects(pm, versions) if s in known and pm.has_consent(known[s], "ccpa_opt_out")]
    return not opted, {
        "opted_out_users_in_lineage": len(opted),
        "sharing_paths": ["companion updates publish (model weights only)"],
        "note": "a model trained on data of a user who opted out of sale/sharing must not be published",
    }


def evaluate(pm: Any, model_name: str, standards: list[str]) -> ComplianceReport:
    unknown = [s for s in standards if s.upper() not in STANDARDS]
    if unknown or not standards:
        raise PrivacyError(
            f"privacy_standards: unknown {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"supported: {', '.join(STANDARDS)}"
        )
    label, versions = _model_versions(pm, model_name)
    cache: dict[str, tuple[bool, dict[str, Any]]] = {}

    def run(name: str) -> tuple[bool, dict[str, Any]]:
        if name not in cache:
            cache[name] = {
                "lineage_anonymized": lambda: _lineage_anonymized(pm, label, versions),
                "consent_on_record": lambda: _consent(pm, versions, "training"),
                "retention_enforced": lambda: _retention(pm),
                "erasure_possible": lambda: _erasure(pm, versions),
                "audit_chain_verifies": lambda: _audit(pm),
                "encryption_at_rest": lambda: _encryption(pm),
                "record_of_processing": lambda: _record(pm),
                "opt_out_honoured": lambda: _opt_out(pm, versions),
                "export_possible": lambda: (
                    True,
                    {"archive": "companion privacy export USER", "stores": _erasure(pm, versions)[1]["stores"]},
                ),
            }[name]()
        return cache[name]

    report = ComplianceReport(model=label, standards=[s.upper() for s in standards])
    for std in report.standards:
        for name, ref in STANDARDS[std]:
            passed, evidence = run(name)
            report.checks.append(Check(name, std, ref, passed, evidence | {"model_versions": len(versions)}))
    return report
