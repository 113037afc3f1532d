"""Update catalogs: the signed `catalog.json` format, Ed25519 keys, signing and verification.

A catalog is one JSON file. Its `signed` part lists model versions and their files; its
`signatures` sign the canonical bytes of that part (keys sorted, no spaces, UTF-8)::

    {
      "signed": {
        "format": "companion-catalog/1",
        "catalog_version": 7,                      # grows with every publish; never goes back
        "issued": "2025-06-01T12:00:00+00:00",
        "expires": "2025-07-01T12:00:00+00:00",    # refused after this (freeze protection)
        "models": [
          {"category": "personality", "name": "luna", "version": "2.0.0",
           "notes": "...", "author": "...", "created": "...",
           "files": [{"path": "model.safetensors", "size": 21247000, "sha256": "<hex>",
                      "url": "personality/luna/2.0.0/model.safetensors"}]}
        ]
      },
      "signatures": [{"keyid": "<16 hex>", "sig": "<base64 Ed25519 signature>"}]
    }

File `url`s are relative to the catalog's location (or absolute http(s) URLs); every file is
checked against its size and sha256 after download, so the server need not be trusted. Keys:
the private key is a PKCS#8 PEM file (mode 0600); the public key travels as
`ed25519:<base64 of the 32 raw bytes>` and goes into `updates.trusted_keys`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.errors import CatalogError, UpdateError
from models.lifecycle.update_config import KEY_PREFIX
from models.store import NAME_PATTERN, SEMVER_PATTERN

__all__ = [
    "CATALOG_FORMAT",
    "CATALOG_NAME",
    "Catalog",
    "CatalogFile",
    "CatalogModel",
    "canonical_bytes",
    "generate_key",
    "key_id",
    "load_private_key",
    "parse_public_key",
    "public_key_text",
    "sign_catalog",
    "verify_catalog",
]

CATALOG_FORMAT = "companion-catalog/1"
CATALOG_NAME = "catalog.json"
MAX_CATALOG_BYTES = 16 << 20


class _Lenient(BaseModel):
    # Newer publishers may add keys: ignore them rather than refuse the catalog.
    model_config = ConfigDict(extra="ignore", frozen=True)


class CatalogFile(_Lenient):
    """One file of a catalog model version."""

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str | None = None

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        parts = value.split("/")
        if value.startswith("/") or "\\" in value or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            raise ValueError(f"unsafe file path {value!r}: use a relative path without '..' or hidden parts")
        return value

    def location(self, category: str, name: str, version: str) -> str:
        return self.url or f"{category}/{name}/{version}/{self.path}"


class CatalogModel(_Lenient):
    """One model version offered by a catalog."""

    category: str = Field(pattern=f"^{NAME_PATTERN}$")
    name: str = Field(pattern=f"^{NAME_PATTERN}$")
    version: str = Field(pattern=f"^{SEMVER_PATTERN}$")
    notes: str = ""
    author: str | None = None
    created: str | None = None
    files: list[CatalogFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


class Catalog(_Lenient):
    """The signed part of a catalog."""

    format: str
    catalog_version: int = Field(ge=1)
    issued: datetime
    expires: datetime
    models: list[CatalogModel] = Field(default_factory=list)

    @field_validator("format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value != CATALOG_FORMAT:
            raise ValueError(f"unsupported catalog format {value!r} (this version reads {CATALOG_FORMAT!r})")
        return value

    @field_validator("issued", "expires")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("timestamps need a timezone, e.g. 2025-07-01T12:00:00+00:00")
        return value


# -- keys ---------------------------------------------------------------------------------------


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise UpdateError("signed catalogs need the 'cryptography' package: pip install cryptography") from exc
    return ed25519


def generate_key(path: Path) -> str:
    """Write a new Ed25519 private key to `path` (PEM, mode 0600); return its public key text."""
    from cryptography.hazmat.primitives import serialization

    path = Path(path)
    if path.exists():
        raise UpdateError(f"{path} already exists: refusing to overwrite a signing key (choose another --out)")
    key = _crypto().Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_text(key.public_key())


def load_private_key(path: Path) -> Any:
    """The Ed25519 private key in a PEM file written by `generate_key`."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UpdateError(
            f"cannot read the signing key {path}: {exc}; create one with `companion updates keygen`"
        ) from exc
    if not isinstance(key, _crypto().Ed25519PrivateKey):
        raise UpdateError(f"{path} is not an Ed25519 key; create one with `companion updates keygen`")
    return key


def _raw_public(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_text(key: Any) -> str:
    """`ed25519:<base64>` for a public key object."""
    return KEY_PREFIX + base64.b64encode(_raw_public(key)).decode()


def parse_public_key(text: str) -> Any:
    if not text.startswith(KEY_PREFIX):
        raise UpdateError(f"{text[:20]!r}... is not an 'ed25519:<base64>' public key")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
        return _crypto().Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise UpdateError(f"{text[:20]!r}... is not a valid Ed25519 public key: {exc}") from exc


def key_id(key: Any) -> str:
    """The first 16 hex digits of the sha256 of the raw public key."""
    return hashlib.sha256(_raw_public(key)).hexdigest()[:16]


# -- signing and verifying ------------------------------------------------------------------------


def canonical_bytes(signed: dict[str, Any]) -> bytes:
    """The exact bytes a signature covers."""
    return json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_catalog(signed: dict[str, Any], private_key: Any) -> dict[str, Any]:
    """The whole catalog document: `signed` plus one signature by `private_key`."""
    Catalog.model_validate(signed)  # never sign something readers would refuse
    sig = private_key.sign(canonical_bytes(signed))
    keyid = key_id(private_key.public_key())
    return {"signed": signed, "signatures": [{"keyid": keyid, "sig": base64.b64encode(sig).decode()}]}


def _document(raw: bytes, where: str) -> tuple[dict[str, Any], list[Any]]:
    if len(raw) > MAX_CATALOG_BYTES:
        raise CatalogError(f"{where}: catalog is larger than {MAX_CATALOG_BYTES >> 20} MiB; refusing it")
    from models import limits

    try:
        doc = limits.loads_bounded(raw.decode("utf-8"), where)  # depth checked before parsing
    except limits.LimitError as exc:
        raise CatalogError(str(exc)) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CatalogError(f"{where}: not a JSON catalog ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict):
        raise CatalogError(f"{where}: not a signed catalog (expected 'signed' and 'signatures')")
    sigs = doc.get("signatures")
    return doc["signed"], sigs if isinstance(sigs, list) else []


def verify_catalog(
    raw: bytes, trusted_keys: list[str], where: str, now: datetime | None = None
) -> tuple[Catalog, str, str]:
    """Check signature and expiry of a catalog document.

    Returns the catalog, the id of the key that signed it and the sha256 of its signed bytes.

    Raises CatalogError naming the source and what to do: no trusted key configured, signed by
    an unknown key, a signature that does not match (content changed after signing), malformed
    content, or expired.
    """
    if not trusted_keys:
        raise CatalogError(
            f"{where}: no trusted keys configured: add the publisher's public key to updates.trusted_keys "
            "in config.yaml (`companion updates keygen` prints one)"
        )
    signed, signatures = _document(raw, where)
    trusted = {key_id(k): k for k in (parse_public_key(t) for t in trusted_keys)}
    data = canonical_bytes(signed)
    signer = None
    seen_ids = []
    for entry in signatures:
        if not isinstance(entry, dict) or entry.get("keyid") not in trusted:
            seen_ids.append(str(entry.get("keyid") if isinstance(entry, dict) else "?"))
            continue
        try:
            trusted[entry["keyid"]].verify(base64.b64decode(str(entry.get("sig", ""))), data)
        except Exception:  # InvalidSignature or undecodable base64
            raise CatalogError(
                f"{where}: bad signature from key {entry['keyid']}: the catalog was changed after it was signed "
                "(tampering or a broken mirror); refusing it"
            ) from None
        signer = entry["keyid"]
        break
    if signer is None:
        raise CatalogError(
            f"{where}: not signed by a trusted key (signed by: {', '.join(seen_ids) or 'nobody'}; "
            f"trusted: {', '.join(sorted(trusted))}); add the publisher's key to updates.trusted_keys if you trust it"
        )
    try:
        catalog = Catalog.model_validate(signed)
    except ValidationError as exc:
        raise CatalogError(f"{where}: malformed catalog: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from exc
    now = now or datetime.now(UTC)
    if catalog.expires <= now:
        raise CatalogError(
            f"{where}: catalog version {catalog.catalog_version} expired at {catalog.expires.isoformat()}: the "
            "publisher must re-sign it (`companion updates publish`); refusing stale catalogs stops freeze attacks"
        )
    return catalog, signer, hashlib.sha256(data).hexdigest()
