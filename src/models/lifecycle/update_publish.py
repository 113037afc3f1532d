"""The publishing side of updates: put a model version into a signed catalog folder.

    companion updates keygen                         # once: a signing key, prints its public key
    companion updates publish luna --to ./catalog    # copy + sign; serve ./catalog with any web server

`publish_version` copies the version's files (verified against its manifest first) into
`<dest>/<category>/<name>/<version>/`, adds or replaces its entry in `<dest>/catalog.json`, bumps
`catalog_version`, renews `expires`, and re-signs. Files are written before the catalog that lists
them, each through a temporary name, so a reader never sees a catalog pointing at a missing file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from models.errors import UpdateError
from models.lifecycle.catalog import CATALOG_FORMAT, CATALOG_NAME, load_private_key, sign_catalog
from models.lifecycle.version_control import ModelVersionControl
from models.lifecycle.version_diff import manifest_files

__all__ = ["PublishedVersion", "default_key_path", "publish_version"]


def default_key_path(home: Path) -> Path:
    """Where `companion updates keygen` writes the signing key unless told otherwise."""
    return home / "keys" / "catalog-signing.pem"


@dataclass(frozen=True)
class PublishedVersion:
    """What `publish_version` wrote."""

    model: str
    version: str
    catalog: Path
    catalog_version: int
    files: int
    size: int
    expires: str


def _copy_verified(src: Path, dest: Path, sha256: str) -> None:
    if dest.exists() and _sha256(dest) == sha256:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    shutil.copyfile(src, part)
    if _sha256(part) != sha256:
        part.unlink()
        raise UpdateError(f"{src} changed while it was being published; run `companion models verify`")
    os.replace(part, dest)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_files(folder: Path, dest: Path, prefix: str) -> list[dict[str, Any]]:
    """Copy a version's files under `dest/prefix/`; return their catalog entries."""
    entries = []
    for rel, entry in sorted(manifest_files(folder).items()):
        url = f"{prefix}/{rel}"
        _copy_verified(folder / rel, dest / url, entry["sha256"])
        entries.append({"path": rel, "size": entry["size"], "sha256": entry["sha256"], "url": url})
    return entries


def _existing(dest: Path) -> dict[str, Any]:
    path = dest / CATALOG_NAME
    if not path.exists():
        return {"format": CATALOG_FORMAT, "catalog_version": 0, "models": []}
    try:
        signed = json.loads(path.read_text(encoding="utf-8"))["signed"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UpdateError(f"{path} is not a catalog this tool wrote ({exc}); publish into an empty folder") from exc
    return signed


def publish_version(
    vc: ModelVersionControl,
    model: str,
    dest: Path,
    key_path: Path,
    version: str | None = None,
    expires_days: float = 30.0,
) -> PublishedVersion:
    """Add `model` at `version` (default: its `current` one) to the signed catalog in `dest`."""
    if expires_days <= 0:
        raise UpdateError(f"--expires-days must be positive, got {expires_days}")
    key = load_private_key(key_path)
    info = vc.show(model, version)
    folder = vc.folder(info.model, info.version)  # verified against its manifest
    dest = Path(dest).resolve()
    entries = _copy_files(folder, dest, f"{info.category}/{info.name}/{info.version}")
    signed = _existing(dest)
    now = datetime.now(UTC)
    keep = [
        m
        for m in signed.get("models", [])
        if (m.get("category"), m.get("name"), m.get("version")) != (info.category, info.name, info.version)
    ]
    new_entry = {
        "category": info.category,
        "name": info.name,
        "version": info.version,
        "notes": info.notes or "",
        "author": info.author,
        "created": info.created_at,
        "files": entries,
    }
    signed = {
        "format": CATALOG_FORMAT,
        "catalog_version": int(signed.get("catalog_version", 0)) + 1,
        "issued": now.isoformat(),
        "expires": (now + timedelta(days=expires_days)).isoformat(),
        "models": [*keep, new_entry],
    }
    document = sign_catalog(signed, key)
    path = dest / CATALOG_NAME
    part = path.with_name(f".{CATALOG_NAME}.{os.getpid()}.partial")
    part.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(part, path)
    return PublishedVersion(
        model=info.model,
        version=info.version,
        catalog=path,
        catalog_version=signed["catalog_version"],
        files=len(entries),
        size=sum(e["size"] for e in entries),
        expires=signed["expires"],
    )
