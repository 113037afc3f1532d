"""The audit chain's rules, apart from the database that stores it: how a row is hashed and
bound to its user, and how a chain, its signed checkpoints and its signed head are verified.

`models.audit.AuditLog` writes rows by these rules and reads them back for `verify_chain`; the
module docstring there explains the chain, the signatures and the subjects.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["BINDING", "GENESIS", "VerifyReport", "binding", "canonical", "row_hash", "verify_chain"]

GENESIS = "0" * 64
BINDING = "subject_binding"  # the reserved `detail` key binding a row to its subject's user


def canonical(obj: dict[str, Any]) -> bytes:
    """The bytes a row or checkpoint is hashed and signed over (sorted keys, compact, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def row_hash(row: dict[str, Any]) -> str:
    body = {k: row[k] for k in ("seq", "at", "subject", "model", "action", "level", "allowed", "detail", "prev_hash")}
    return hashlib.sha256(canonical(body)).hexdigest()


def binding(salt: str, subject: str, user_id: str) -> str:
    return hashlib.sha256(f"{salt}\x00{subject}\x00{user_id}".encode()).hexdigest()


@dataclass
class VerifyReport:
    """What `verify` found. Falsy when the chain is broken; `first_bad` is the first bad row."""

    ok: bool
    rows: int
    checkpoints: int
    first_bad: int | None = None
    problem: str = ""
    unsigned_tail: int = 0
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def verify_chain(
    rows: list[dict[str, Any]],
    cps: list[dict[str, Any]],
    subjects: dict[str, tuple[str, str | None]],
    head: Path,
    trusted: str | None,
    checkpoint_every: int,
) -> VerifyReport:
    """Check every row's position, link, hash and subject binding, every checkpoint's signature
    and interval, and the signed head at `head` (`models.audit`'s docstring says why each)."""
    report = VerifyReport(ok=True, rows=len(rows), checkpoints=len(cps))
    prev, hashes = GENESIS, {}
    for position, row in enumerate(rows, start=1):
        seq = int(row["seq"])
        problem = None
        if seq != position:
            problem = f"row {position} is missing or out of order (found seq {seq} there)"
        elif row["prev_hash"] != prev:
            problem = f"row {seq} does not link to row {seq - 1} (a row was edited, removed or moved)"
        elif row_hash(row) != row["hash"]:
            problem = f"row {seq} was edited (its hash does not match its content)"
        else:
            problem = _check_binding(row, subjects)
        if problem:
            return _bad(report, position, problem)
        prev = row["hash"]
        hashes[seq] = row["hash"]
    last = 0
    for cp in cps:
        seq = int(cp["seq"])
        problem = _check_signature(cp, trusted)
        if problem:
            return _bad(report, seq, f"checkpoint at row {seq} has a bad signature ({problem})")
        if seq not in hashes:
            first = len(rows) + 1
            return _bad(report, first, f"rows {first}..{seq} were cut off (a signed checkpoint covers row {seq})")
        if hashes[seq] != cp["hash"]:
            return _bad(report, seq, f"row {seq} differs from its signed checkpoint")
        every = int(cp.get("every") or checkpoint_every)
        if seq - last > every:
            return _bad(
                report,
                last + every,
                f"no signed checkpoint at row {last + every} (one is made every {every} rows): "
                "checkpoints were deleted",
            )
        last = seq
    if not rows:
        return report
    head_problem = _check_head(head, len(rows), hashes, trusted)
    if head_problem:
        return _bad(report, head_problem[0], head_problem[1])
    if len(rows) - last >= checkpoint_every:
        return _bad(
            report,
            last + checkpoint_every,
            f"no signed checkpoint at row {last + checkpoint_every} (one is made every "
            f"{checkpoint_every} rows): checkpoints were deleted",
        )
    report.unsigned_tail = 0
    return report


def _check_head(head: Path, n: int, hashes: dict[int, str], trusted: str | None) -> tuple[int, str] | None:
    if not head.exists():
        return n, (
            f"the signed head {head} is missing: the newest rows cannot be shown to be intact "
            "(restore it from a backup; `companion audit checkpoint` re-signs only after you have checked the rows)"
        )
    try:
        cp = json.loads(head.read_text(encoding="utf-8"))
        seq = int(cp["seq"])
    except (ValueError, KeyError, TypeError):
        return n, f"{head} is not a signed head (not valid JSON with a seq)"
    problem = _check_signature(cp, trusted)
    if problem:
        return seq, f"the head {head} has a bad signature ({problem})"
    if seq > n:
        return n + 1, f"rows {n + 1}..{seq} were cut off (the signed head covers row {seq})"
    if hashes.get(seq) != cp.get("hash"):
        return seq, f"row {seq} differs from the signed head"
    if seq < n:
        return seq + 1, (
            f"rows {seq + 1}..{n} are not covered by the signed head: they were added without the "
            "installation key (or the process stopped between writing a row and signing it)"
        )
    return None


def _check_signature(cp: dict[str, Any], trusted: str | None) -> str | None:
    from models.lifecycle.catalog import parse_public_key

    body = {"seq": int(cp["seq"]), "hash": cp["hash"], "at": cp["at"]}
    if cp.get("every") is not None:
        body["every"] = int(cp["every"])
    try:
        if trusted is not None and cp["public_key"] != trusted:
            raise ValueError("signed by another key")
        parse_public_key(cp["public_key"]).verify(base64.b64decode(cp["signature"]), canonical(body))
    except Exception as exc:  # cryptography raises InvalidSignature; bad base64 raises ValueError
        return type(exc).__name__ if not isinstance(exc, ValueError) else str(exc) or "ValueError"
    return None


def _check_binding(row: dict[str, Any], subjects: dict[str, tuple[str, str | None]]) -> str | None:
    """A row whose subject still maps to a user must carry that user's binding."""
    mapped = subjects.get(row["subject"])
    if mapped is None:
        return None  # erased (or never mapped): the row identifies nobody
    user_id, salt = mapped
    try:
        bound = json.loads(row["detail"] or "{}").get(BINDING)
    except ValueError:
        return f"row {row['seq']} has a detail that is not JSON"
    if bound is None or not salt:
        return None  # written before subjects were bound (migration 7)
    if bound != binding(salt, row["subject"], user_id):
        return f"row {row['seq']}: subject {row['subject']} was re-attributed to another user"
    return None


def _bad(report: VerifyReport, first_bad: int | None, problem: str) -> VerifyReport:
    report.ok, report.first_bad, report.problem = False, first_bad, problem
    return report
