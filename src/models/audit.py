"""The tamper-evident audit log: an append-only hash chain with signed checkpoints.

    log = AuditLog()
    log.append("user123", "personality/luna", "generate", level="generate", allowed=True)
    report = log.verify()          # falsy, with `first_bad` naming the row, if anything was changed
    rows = log.show(user="user123", model="personality/luna", since="2026-11-01")

**The chain.** Row `seq` (1, 2, 3, ... without gaps) stores `prev_hash` (the previous row's
`hash`, 64 zeros for row 1) and `hash = sha256(canonical(row))`, where `canonical` is JSON of
every column but `hash` with sorted keys, no whitespace and UTF-8 (the same rule as RFC 8785 for
the plain strings and integers stored here). Editing any column of a row breaks its hash;
deleting a row breaks the numbering and the next row's link; moving a row's content to another
position breaks its hash (the position is hashed).

**Signatures.** Rows are signed with the installation's Ed25519 key
(`COMPANION_HOME/keys/installation-ed25519.pem`, created with the update signer's key helpers):

* the **head**, `{seq, hash, at, every}` of the newest row, is signed on every append (inside
  the append's transaction) into `COMPANION_HOME/audit/head.json`;
* a **checkpoint** is signed into `audit_checkpoints` every `security.audit.checkpoint_every`
  rows (and on `checkpoint()`), recording that interval.

`verify` requires both (issue 15: a chain re-hashed end to end, with checkpoints and head
deleted, used to pass): a missing or unsigned head, a head that does not match the newest row,
rows after the head, or a gap of more than the interval between checkpoints is a failure with
a message saying which. Without the key nobody can re-sign, so a rewritten chain, a cut tail
or appended rows are caught. What a signature cannot catch: someone who restores an *older*
signed head together with an older copy of the database (a rollback); keep the head off the
machine (a log shipper, a backup) if that matters.

**Users are subjects.** A row names an opaque subject id (`s_` + 16 hex digits); the map
subject → user id (with a random salt) lives in `audit_subjects`. Each row's hashed `detail`
carries `sha256(salt, subject, user id)`, so re-attributing a subject to another user id
breaks verification. Erasing a user (GDPR Art. 17) deletes their map row and salt: the chain
still verifies and the rows no longer identify anyone (the binding cannot be tested without
the salt). Keep personal data out of `detail`.

Appends take the database write lock (SQLite `BEGIN IMMEDIATE`; PostgreSQL an advisory lock),
so concurrent writers from several processes extend one chain. Within a process, appends are
group-committed (`models.group_commit`): `append` returns once its own row is committed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, or_, select, text, update

from models import db
from models.audit_chain import BINDING, GENESIS, VerifyReport, canonical, verify_chain
from models.audit_chain import binding as _binding
from models.audit_chain import row_hash as _row_hash
from models.errors import AuditError
from models.group_commit import GroupCommit

__all__ = ["AuditLog", "AuditRow", "VerifyReport", "canonical", "installation_key"]

_PG_AUDIT_LOCK = 0x61756474  # "audt"
KEY_NAME = "installation-ed25519.pem"


def installation_key(home: Path) -> Any:
    """The installation's Ed25519 private key, created (mode 0600) on first use."""
    from models.errors import UpdateError
    from models.lifecycle.catalog import generate_key, load_private_key

    path = home / "keys" / KEY_NAME
    if not path.exists():
        with contextlib.suppress(UpdateError):  # another process created it first
            generate_key(path)
    try:
        return load_private_key(path)
    except UpdateError as exc:
        raise AuditError(f"cannot use the installation key {path}: {exc}") from exc


@dataclass(frozen=True)
class AuditRow:
    seq: int
    at: str
    user: str | None
    subject: str
    model: str
    action: str
    level: str | None
    allowed: bool | None
    detail: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Pending:
    """One row waiting for its group commit."""

    user_id: str
    model: str
    action: str
    level: str | None
    allowed: bool | None
    detail: dict[str, Any]


_groups: dict[tuple[str, str], GroupCommit[_Pending, int]] = {}
_groups_lock = threading.Lock()


def _group(url: str, home: Path) -> GroupCommit[_Pending, int]:
    """The group commit of one audit chain in this process."""
    with _groups_lock:
        return _groups.setdefault((url, str(home)), GroupCommit())


class AuditLog:
    """The audit chain in one database (default: the home's)."""

    def __init__(self, url: str | None = None, *, home: Path | None = None, checkpoint_every: int = 100) -> None:
        from models.home import companion_home

        self.url = url or db.default_url()
        self.home = home or companion_home()
        self.checkpoint_every = checkpoint_every
        self._engine: Engine | None = None
        self._signing_key: Any = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = db.connect(self.url)
        return self._engine

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        with db.write_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_AUDIT_LOCK})
            yield conn

    # -- subjects -------------------------------------------------------------------------

    def subject_of(self, conn: Connection, user_id: str, *, create: bool = True) -> str | None:
        found = self._subject(conn, user_id, create=create)
        return found[0] if found else None

    def _subject(self, conn: Connection, user_id: str, *, create: bool = True) -> tuple[str, str] | None:
        """`(subject, salt)` of `user_id` (created, or salted if it predates salts, when `create`)."""
        t = db.audit_subjects
        found = conn.execute(select(t.c.subject, t.c.salt).where(t.c.user_id == user_id)).first()
        if found is not None and found.salt:
            return found.subject, found.salt
        if not create:
            return (found.subject, found.salt or "") if found is not None else None
        salt = secrets.token_hex(16)
        if found is not None:
            conn.execute(update(t).where(t.c.subject == found.subject).values(salt=salt))
            return found.subject, salt
        subject = "s_" + secrets.token_hex(8)
        conn.execute(insert(t).values(subject=subject, user_id=user_id, created_at=db.utc_now(), salt=salt))
        return subject, salt

    def forget_user(self, conn: Connection, user_id: str) -> int:
        """Drop the user's subject mapping (erasure): their rows stay in the chain, unnamed."""
        return conn.execute(delete(db.audit_subjects).where(db.audit_subjects.c.user_id == user_id)).rowcount

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        user_id: str,
        model: str,
        action: str,
        *,
        level: str | None = None,
        allowed: bool | None = None,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Append one row; returns its `seq`."""
        if not isinstance(user_id, str) or not user_id:
            raise AuditError(f"audit rows need a user id, got {user_id!r}")
        if not isinstance(action, str) or not action:
            raise AuditError(f"audit rows need an action, got {action!r}")
        try:
            json.dumps(detail or {}, sort_keys=True, ensure_ascii=False)  # fails here, not in the batch
        except (TypeError, ValueError) as exc:
            raise AuditError(f"audit detail must be JSON-serializable: {exc}") from exc
        if BINDING in (detail or {}):
            raise AuditError(f"audit detail may not use the reserved key {BINDING!r}")
        entry = _Pending(user_id, model, action, level, allowed, dict(detail or {}))
        return _group(self.url, self.home).submit(entry, self._write)

    def _write(self, batch: list[_Pending]) -> list[int]:
        """Append `batch` in order in one transaction; their seqs."""
        t = db.audit_log
        rows: list[dict[str, Any]] = []
        with self._writing() as conn:
            last = conn.execute(select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)).first()
            seq, prev = (int(last.seq) + 1, last.hash) if last else (1, GENESIS)
            for e in batch:
                subject, salt = self._subject(conn, e.user_id)  # type: ignore[misc]
                detail_text = json.dumps(
                    {**e.detail, BINDING: _binding(salt, subject, e.user_id)},
                    sort_keys=True,
                    separators=(",", ":"),
                    ensure_ascii=False,
                )
                row = {
                    "seq": seq,
                    "at": db.utc_now(),
                    "subject": subject,
                    "model": str(e.model or "")[:200],
                    "action": e.action[:100],
                    "level": e.level,
                    "allowed": None if e.allowed is None else int(bool(e.allowed)),
                    "detail": detail_text,
                    "prev_hash": prev,
                }
                row["hash"] = prev = _row_hash(row)
                rows.append(row)
                seq += 1
            conn.execute(insert(t), rows)
            for row in rows:
                if row["seq"] % self.checkpoint_every == 0:
                    self._checkpoint(conn, row["seq"], row["hash"])
            self._sign_head(rows[-1]["seq"], rows[-1]["hash"])  # under the lock, so heads are written in order
        return [row["seq"] for row in rows]

    def checkpoint(self) -> int | None:
        """Sign the newest row now; returns its seq (None for an empty log)."""
        t = db.audit_log
        with self._writing() as conn:
            last = conn.execute(select(t.c.seq, t.c.hash).order_by(t.c.seq.desc()).limit(1)).first()
            if last is None:
                return None
            have = conn.scalar(select(db.audit_checkpoints.c.seq).where(db.audit_checkpoints.c.seq == last.seq))
            if have is None:
                self._checkpoint(conn, int(last.seq), last.hash)
            self._sign_head(int(last.seq), last.hash)
        return int(last.seq)

    def _key(self) -> Any:
        if self._signing_key is None:
            self._signing_key = installation_key(self.home)
        return self._signing_key

    def _signed(self, seq: int, row_hash: str) -> dict[str, Any]:
        from models.lifecycle.catalog import public_key_text

        key = self._key()
        body = {"seq": seq, "hash": row_hash, "at": db.utc_now(), "every": self.checkpoint_every}
        signature = base64.b64encode(key.sign(canonical(body))).decode()
        return {**body, "public_key": public_key_text(key.public_key()), "signature": signature}

    def _checkpoint(self, conn: Connection, seq: int, row_hash: str) -> None:
        conn.execute(insert(db.audit_checkpoints).values(**self._signed(seq, row_hash)))

    def _sign_head(self, seq: int, row_hash: str) -> None:
        head = self.home / "audit" / "head.json"
        head.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=".head.json.", suffix=".partial", dir=head.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(self._signed(seq, row_hash)) + "\n")
        os.replace(part, head)

    # -- reading --------------------------------------------------------------------------

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(db.audit_log)) or 0)

    def show(
        self,
        *,
        user: str | None = None,
        model: str | None = None,
        since: str | None = None,
        action: str | None = None,
        limit: int | None = None,
    ) -> list[AuditRow]:
        """Rows oldest first, filtered by user (rows they acted in and rows about them, such as a
        grant to them), model (exact or `category/*` glob), time and action."""
        t, s = db.audit_log, db.audit_subjects
        q = select(t, s.c.user_id).select_from(t.outerjoin(s, t.c.subject == s.c.subject))
        if user is not None:  # rows the user acted in, and rows about them (a grant to them, by an admin)
            about = f'"for_user":{json.dumps(user, ensure_ascii=False)}'
            q = q.where(or_(s.c.user_id == user, t.c.detail.contains(about, autoescape=True)))
        if model is not None:
            q = q.where(t.c.model.like(model.replace("*", "%")) if "*" in model else t.c.model == model)
        if since is not None:
            q = q.where(t.c.at >= _since(since))
        if action is not None:
            q = q.where(t.c.action == action)
        q = q.order_by(t.c.seq.desc() if limit else t.c.seq)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        out = [
            AuditRow(
                seq=int(r.seq),
                at=r.at,
                user=r.user_id,
                subject=r.subject,
                model=r.model,
                action=r.action,
                level=r.level,
                allowed=None if r.allowed is None else bool(r.allowed),
                detail={k: v for k, v in json.loads(r.detail or "{}").items() if k != BINDING},
            )
            for r in rows
        ]
        return sorted(out, key=lambda r: r.seq)

    def verify(self) -> VerifyReport:
        """Check every row's position, link, hash and subject binding, every checkpoint's
        signature and interval, and the signed head (see the module docstring)."""
        t, subj = db.audit_log, db.audit_subjects
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(select(t).order_by(t.c.seq)).mappings()]
            cps = [
                dict(r)
                for r in conn.execute(select(db.audit_checkpoints).order_by(db.audit_checkpoints.c.seq)).mappings()
            ]
            subjects = {r.subject: (r.user_id, r.salt) for r in conn.execute(select(subj))}
        trusted = None
        if (self.home / "keys" / KEY_NAME).exists():
            from models.lifecycle.catalog import public_key_text

            trusted = public_key_text(self._key().public_key())
        head = self.home / "audit" / "head.json"
        return verify_chain(rows, cps, subjects, head, trusted, self.checkpoint_every)


def _since(value: str) -> str:
    """An ISO date/time, or a relative '7d' / '12h' / '30m', as an ISO UTC timestamp."""
    import re
    from datetime import UTC, datetime, timedelta

    m = re.fullmatch(r"(\d+)([dhm])", value.strip())
    if m:
        unit = {"d": "days", "h": "hours", "m": "minutes"}[m.group(2)]
        return (datetime.now(UTC) - timedelta(**{unit: int(m.group(1))})).isoformat(timespec="microseconds")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise AuditError(f"--since {value!r}: use an ISO date like 2026-11-01 or a span like 7d, 12h, 30m") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="microseconds")
