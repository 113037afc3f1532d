"""What changed between two versions of a model: files, sizes, config keys, metrics, notes.

Files are compared by their manifest entries (sha256 and size), so a diff reads no weights.
Config changes are key-level diffs of the JSON files a model folder carries (`config.json`,
`generation_config.json`, `companion.json`, `adapter/adapter_config.json`), flattened to dotted
keys. Metrics come from each version's `version.json` (`metrics`), falling back to the numbers in
`companion.json`'s `training` block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from models.errors import IntegrityError
from models.lifecycle.version_records import VERSION_FILE, read_version_file
from models.store import MANIFEST_NAME

__all__ = ["CONFIG_FILES", "VersionDiff", "diff_folders", "manifest_files"]

CONFIG_FILES = ("config.json", "generation_config.json", "companion.json", "adapter/adapter_config.json")
_META = {MANIFEST_NAME, VERSION_FILE}


@dataclass(frozen=True)
class VersionDiff:
    """Differences from version `a` to version `b` (each value pair is `(a, b)`)."""

    model: str
    a: str
    b: str
    added: dict[str, int] = field(default_factory=dict)  # path -> size in b
    removed: dict[str, int] = field(default_factory=dict)  # path -> size in a
    changed: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (size a, size b)
    unchanged: int = 0
    config: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # file -> key -> (a, b)
    metrics: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    notes: tuple[str | None, str | None] = (None, None)

    @property
    def identical(self) -> bool:
        """True when the two versions hold the same files (metadata may still differ)."""
        return not (self.added or self.removed or self.changed)

    @property
    def size_change(self) -> int:
        grown = sum(self.added.values()) - sum(self.removed.values())
        return grown + sum(b - a for a, b in self.changed.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "identical": self.identical, "size_change": self.size_change}


def manifest_files(folder: Path) -> dict[str, dict[str, Any]]:
    """The `files` of a version's manifest (path -> {sha256, size}), version metadata excluded."""
    path = folder / MANIFEST_NAME
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{path} cannot be read ({exc}); run `companion models verify`") from exc
    return {rel: entry for rel, entry in files.items() if rel not in _META}


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _json_file(folder: Path, rel: str) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / rel).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _key_changes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
    flat_a, flat_b = _flatten(a or {}), _flatten(b or {})
    return {
        key: (flat_a.get(key), flat_b.get(key))
        for key in sorted(flat_a.keys() | flat_b.keys())
        if flat_a.get(key) != flat_b.get(key)
    }


def _metrics(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    metrics = meta.get("metrics")
    if isinstance(metrics, dict) and metrics:
        return _flatten(metrics)
    training = (_json_file(folder, "companion.json") or {}).get("training")
    if isinstance(training, dict):
        return {k: v for k, v in _flatten(training).items() if isinstance(v, int | float) or v is None}
    return {}


def diff_folders(model: str, a: str, folder_a: Path, b: str, folder_b: Path) -> VersionDiff:
    """Compare two published version folders (each must have a manifest)."""
    files_a, files_b = manifest_files(folder_a), manifest_files(folder_b)
    added = {rel: files_b[rel]["size"] for rel in sorted(files_b.keys() - files_a.keys())}
    removed = {rel: files_a[rel]["size"] for rel in sorted(files_a.keys() - files_b.keys())}
    common = sorted(files_a.keys() & files_b.keys())
    changed = {
        rel: (files_a[rel]["size"], files_b[rel]["size"])
        for rel in common
        if files_a[rel]["sha256"] != files_b[rel]["sha256"]
    }
    config = {}
    for rel in CONFIG_FILES:
        if rel in changed or rel in added or rel in removed:
            delta = _key_changes(_json_file(folder_a, rel), _json_file(folder_b, rel))
            if delta:
                config[rel] = delta
    meta_a, meta_b = read_version_file(folder_a), read_version_file(folder_b)
    metrics = _key_changes(_metrics(folder_a, meta_a), _metrics(folder_b, meta_b))
    return VersionDiff(
        model=model,
        a=a,
        b=b,
        added=added,
        removed=removed,
        changed=changed,
        unchanged=len(common) - len(changed),
        config=config,
        metrics=metrics,
        notes=(meta_a.get("notes"), meta_b.get("notes")),
    )
