"""ModelVersionControl: immutable semver versions of a model, aliases with history, rollback.

    version_control = ModelVersionControl()
    new_version = version_control.create_version(model_name="luna_personality",
                                                 version_notes="Improved emotional responses")
    rollback_success = version_control.rollback_version(model_name="luna_personality",
                                                        target_version="1.2.0")

**What a version is.** A read-only folder `store/<category>/<name>/<version>/` (see
`models.store`) holding the model's files, a `manifest.json` (sha256 and size of every file) and a
`version.json` (notes, author, time, lineage, metrics), plus a row in the metadata database.

**What `create_version` snapshots** (the model's *working folder*), first match wins:
1. `source=` when given (a training run's output folder, say);
2. `COMPANION_HOME/work/<category>/<name>/` when it exists: the place to edit a model by hand;
3. the folder the model is served from right now: its `current` version if it has one, else
   the folder its config entry names (for the seed's Luna on a fresh home: the built-in model, so
   the first snapshot makes `personality/luna` 1.0.0 from it).
Versions are numbered by bumping the highest release (`1.0.0` first); the copy happens before the
model's lock is taken, and only numbering, publishing (one rename) and the database row happen
under it, so concurrent writers get unique numbers and a crash leaves no partial version.

**Aliases** (`current`, `production`, any name) point at versions; `ModelManager` serves the
`current` one and reloads when it moves. Every move is recorded with who, when, from, to and why.
`create_version` moves `current` to the new version unless `activate=False`; `rollback_version`
moves it back (or to any existing version) and returns a falsy result with the reason instead
of raising when it cannot.

**Crash safety.** The store folder appears by rename *before* its database row is written; a
crash in between leaves a complete but unregistered folder, which the next writer of that model
registers (`lineage.recovered`). Alias moves and their history rows are one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
from pathlib import Path
from typing import Any, Literal

from models import db
from models.context import Context, current
from models.errors import CompanionError, ModelNotFoundError, StoreError, UnknownModelError, VersionError
from models.lifecycle.version_diff import VersionDiff, diff_folders, manifest_files
from models.lifecycle.version_index import ANY, AliasMove, VersionIndex
from models.lifecycle.version_records import (
    VERSION_FILE,
    VERSION_FORMAT,
    RollbackResult,
    VerifyReport,
    VersionInfo,
    default_actor,
    read_version_file,
    write_json_atomic,
)
from models.paths import name_candidates
from models.store import (
    MANIFEST_NAME,
    ModelStore,
    check_safe_files,
    hash_folder,
    parse_version,
    validate_name,
    validate_version,
    verify_manifest,
)

__all__ = ["ModelVersionControl", "RollbackResult", "VerifyReport", "VersionDiff", "VersionInfo", "bump_version"]

Bump = Literal["major", "minor", "patch"]
_SKIP = {MANIFEST_NAME, VERSION_FILE}


def bump_version(existing: set[str] | list[str], bump: Bump = "minor") -> str:
    """The next release after the highest in `existing` ("1.0.0" when there is none)."""
    if bump not in ("major", "minor", "patch"):
        raise VersionError(f"invalid bump {bump!r}: use 'major', 'minor' or 'patch'")
    releases = sorted((v for v in existing if "-" not in v), key=parse_version)
    if not releases:
        return "1.0.0"
    major, minor, patch = (int(x) for x in releases[-1].split("."))
    return {"major": f"{major + 1}.0.0", "minor": f"{major}.{minor + 1}.0", "patch": f"{major}.{minor}.{patch + 1}"}[
        bump
    ]


def _copy_snapshot(source: Path, dest: Path) -> int:
    """Copy every file of `source` except its manifest and version metadata; return the count."""
    count = 0
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if path.is_dir() or rel.as_posix() in _SKIP or any(p.startswith(".") for p in rel.parts):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest / rel)
        count += 1
    return count


class ModelVersionControl:
    """Versions, aliases and rollback for the models in one `COMPANION_HOME`."""

    def __init__(
        self,
        home: str | Path | None = None,
        actor: str | None = None,
        *,
        database_url: str | None = None,
        config_path: str | Path | None = None,
        user: str | None = None,
        context: Context | None = None,
    ) -> None:
        if context is None:
            context = current()
            if home is not None and Path(home).resolve() != context.home:
                context = Context(home, database_url=database_url)
        self.context = context
        self.home = context.ensure_home()
        self.actor = actor or default_actor()
        self.user = user  # the access-control user (None: the acting user, docs/security.md)
        self.store = ModelStore(self.home)
        self._config_path = Path(config_path) if config_path else None
        self._manager: Any = None
        self.index = VersionIndex(url=database_url or self._configured_url())

    def _configured_url(self) -> str:
        """`$COMPANION_DATABASE_URL`, else the config's `database_url`, else the home's SQLite file."""
        return self.context.database_url_for(self.manager.config)

    @property
    def manager(self) -> Any:
        """The ModelManager used to find models and their folders (created on first use)."""
        if self._manager is None:
            from models.model_manager import ModelManager

            path = self._config_path or (self.home / "config.yaml")
            self._manager = ModelManager(path if path.exists() else None, context=self.context)
        return self._manager

    def require(self, category: str, name: str, level: str, action: str) -> None:
        """Raise AccessDenied unless the acting user holds `level` on the model (audited)."""
        self.manager.security.require(self.user, f"{category}/{name}", level, action=action)

    # -- which model ----------------------------------------------------------------------

    def resolve_model(self, model_name: str, category: str | None = None) -> tuple[str, str]:
        """`(category, name)` for `luna_personality`, `luna`, or `personality/luna`.

        Config entries are searched first (with the seed's suffixes stripped), then the store.
        """
        if category is None and "/" in model_name:
            category, model_name = model_name.split("/", 1)
        if category is not None:
            validate_name(category, "category")
            try:
                return category, self.manager.canonical(category, model_name)[0]
            except UnknownModelError:
                for cand in name_candidates(model_name, category):
                    if self.store.list_versions(category, cand) or self.index.rows(category, cand):
                        return category, cand
                return category, validate_name(model_name)
        try:
            return self.manager.find(model_name)
        except UnknownModelError:
            hits = [
                (cat, cand)
                for cat, name in self.store.list_models()
                for cand in name_candidates(model_name, cat)
                if cand == name
            ]
            if len(hits) == 1:
                return hits[0]
            raise

    def working_folder(self, category: str, name: str) -> Path:
        """The folder `create_version` snapshots when no `source` is given (see the module doc)."""
        work = self.home / "work" / validate_name(category, "category") / validate_name(name)
        if work.is_dir():
            return work
        try:
            ref = self.manager.resolve(category, name)
        except UnknownModelError as exc:
            raise ModelNotFoundError(
                f"{category}/{name} has no working folder: put its files in {work} or pass source="
            ) from exc
        if ref.folder is None or not ref.folder.is_dir():
            raise VersionError(
                f"{category}/{name} is served from {ref.raw!r}, not a local folder, so there is nothing to "
                f"snapshot: put its files in {work} or pass source="
            )
        return ref.folder

    # -- creating -------------------------------------------------------------------------

    def create_version(
        self,
        model_name: str,
        version_notes: str = "",
        bump: Bump = "minor",
        category: str | None = None,
        source: str | Path | None = None,
        lineage: dict[str, Any] | None = None,
        *,
        metrics: dict[str, Any] | None = None,
        activate: bool = True,
        alias: str = "current",
    ) -> VersionInfo:
        """Snapshot the model's working folder as a new immutable version and return it.

        `bump` picks the next number; `lineage` and `metrics` are stored with the version;
        `activate` moves `alias` to it (recorded in the alias history).
        """
        category, name = self.resolve_model(model_name, category)
        self.require(category, name, "train", "create_version")
        if bump not in ("major", "minor", "patch"):
            raise VersionError(f"invalid bump {bump!r}: use 'major', 'minor' or 'patch'")
        folder = Path(source).resolve() if source is not None else self.working_folder(category, name)
        kind = "explicit" if source is not None else ("work" if folder.is_relative_to(self.home / "work") else "served")
        check_safe_files(folder)
        with self.store.staging(category, name) as tmp:
            if _copy_snapshot(folder, tmp) == 0:
                raise VersionError(f"nothing to snapshot: {folder} holds no files")
            with self.store.lock(category, name):
                self.recover(category, name)
                version = bump_version(self._known_versions(category, name), bump)
                previous = self.index.alias(category, name, alias)
                meta = {
                    "format": VERSION_FORMAT,
                    "category": category,
                    "name": name,
                    "version": version,
                    "created": db.utc_now(),
                    "author": self.actor,
                    "notes": version_notes,
                    "lineage": {"source": str(folder), "source_kind": kind, "parent": previous, **(lineage or {})},
                    "metrics": metrics or {},
                }
                write_json_atomic(tmp / VERSION_FILE, meta)
                return self.publish_staged(tmp, meta, alias=alias if activate else None, reason=version_notes)

    def publish_staged(
        self, staging: Path, meta: dict[str, Any], *, alias: str | None, reason: str | None, expect: Any = ANY
    ) -> VersionInfo:
        """Publish a filled `ModelStore.staging()` folder as `meta["version"]` and register it.

        For writers that fill the folder themselves (updates, training). The caller holds the
        model's store lock. If registering fails, the published folder is removed again.
        """
        category, name, version = meta["category"], meta["name"], validate_version(meta["version"])
        if not (staging / VERSION_FILE).exists():
            write_json_atomic(staging / VERSION_FILE, meta)
        published = self.store.publish_staged(staging, category, name, version)
        try:
            with self.index.writing(f"{category}/{name}") as conn:
                self.index.insert_version(conn, self._row(category, name, version, published, meta))
                if alias is not None:
                    why = f"created {version}" + (f": {reason}" if reason else "")
                    self.index.move_alias(
                        conn, category, name, alias, version, actor=self.actor, reason=why, expect=expect
                    )
        except BaseException:
            with contextlib.suppress(Exception):  # else it stays, unregistered, until `recover`
                self.store.delete_version(category, name, version)
            raise
        return self.show(f"{category}/{name}", version)

    def _row(self, category: str, name: str, version: str, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
        return {
            "category": category,
            "name": name,
            "version": version,
            "path": folder.relative_to(self.home).as_posix(),
            "created_at": str(meta.get("created") or db.utc_now()),
            "author": meta.get("author"),
            "notes": meta.get("notes"),
            "manifest_sha256": hash_folder(folder),
            "lineage": meta.get("lineage") or {},
        }

    def _known_versions(self, category: str, name: str) -> set[str]:
        return set(self.store.list_versions(category, name)) | {r["version"] for r in self.index.rows(category, name)}

    def recover(self, category: str, name: str) -> list[str]:
        """Register published folders that lack a database row (left by a crash); hold the store lock."""
        on_disk = set(self.store.list_versions(category, name))
        if not on_disk:
            return []
        with self.index.writing(f"{category}/{name}") as conn:
            missing = sorted(on_disk - self.index.versions(conn, category, name), key=parse_version)
            for version in missing:
                folder = self.store.version_dir(category, name, version)
                meta = read_version_file(folder)
                meta["lineage"] = {**(meta.get("lineage") or {}), "recovered": True}
                self.index.insert_version(conn, self._row(category, name, version, folder, meta))
        return missing

    # -- reading --------------------------------------------------------------------------

    def list_versions(self, model_name: str, category: str | None = None) -> list[VersionInfo]:
        """Every registered version, oldest first, with the aliases and tags on each."""
        category, name = self.resolve_model(model_name, category)
        aliases, tags = self.index.aliases(category, name), self.index.tags(category, name)
        return [self._info(row, aliases, tags) for row in self.index.rows(category, name)]

    def show(self, model_name: str, version: str | None = None, category: str | None = None) -> VersionInfo:
        """One version (default: the `current` one, else the newest) with its file list."""
        category, name = self.resolve_model(model_name, category)
        row = self._require_row(
            category, name, version or self.index.alias(category, name) or self._newest(category, name)
        )
        info = self._info(row, self.index.aliases(category, name), self.index.tags(category, name))
        folder = self.home / row["path"]
        if not folder.is_dir():
            return info
        metrics = read_version_file(folder).get("metrics") or {}
        return dataclasses.replace(info, files=manifest_files(folder), metrics=metrics)

    def _newest(self, category: str, name: str) -> str:
        rows = self.index.rows(category, name)
        if not rows:
            raise VersionError(f"{category}/{name} has no versions yet: create one with create_version")
        return rows[-1]["version"]

    def _require_row(self, category: str, name: str, version: str) -> dict[str, Any]:
        row = self.index.row(category, name, validate_version(version))
        if row is None:
            known = ", ".join(r["version"] for r in self.index.rows(category, name)) or "none"
            raise VersionError(f"{category}/{name} has no version {version} (versions: {known})")
        return row

    def _info(self, row: dict[str, Any], aliases: dict[str, str], tags: dict[str, dict[str, str]]) -> VersionInfo:
        version = row["version"]
        return VersionInfo(
            category=row["category"],
            name=row["name"],
            version=version,
            path=self.home / row["path"],
            created_at=row["created_at"],
            author=row["author"],
            notes=row["notes"],
            lineage=row["lineage"] or {},
            manifest_sha256=row["manifest_sha256"],
            aliases=tuple(sorted(a for a, v in aliases.items() if v == version)),
            tags=tags.get(version, {}),
        )

    def folder(self, model_name: str, version: str, category: str | None = None) -> Path:
        """The verified folder of a registered version."""
        category, name = self.resolve_model(model_name, category)
        self._require_row(category, name, version)
        return self.store.open(category, name, version)

    def diff(self, model_name: str, a: str, b: str, category: str | None = None) -> VersionDiff:
        """Files added/removed/changed (with sizes), config key changes and metrics from `a` to `b`."""
        category, name = self.resolve_model(model_name, category)
        folders = []
        for version in (a, b):
            row = self._require_row(category, name, version)
            folders.append(self.home / row["path"])
        return diff_folders(f"{category}/{name}", a, folders[0], b, folders[1])

    def verify(self, model_name: str | None = None, *, full: bool = True, category: str | None = None) -> VerifyReport:
        """Check every registered version's files against its manifest (re-hashing all when `full`),
        every alias's target, and list published folders that are not registered yet."""
        if model_name is not None:
            models = [self.resolve_model(model_name, category)]
        else:
            models = sorted(set(self.index.models()) | set(self.store.list_models()))
        checked: list[str] = []
        problems: list[str] = []
        unregistered: list[str] = []
        for cat, name in models:
            rows = {r["version"]: r for r in self.index.rows(cat, name)}
            for version, row in rows.items():
                checked.append(f"{cat}/{name} {version}")
                folder = self.home / row["path"]
                try:
                    verify_manifest(folder, full=full)
                    check_safe_files(folder)
                except (StoreError, ModelNotFoundError) as exc:
                    problems.append(f"{cat}/{name} {version}: {exc}")
            for alias, version in self.index.aliases(cat, name).items():
                if version not in rows:
                    problems.append(f"{cat}/{name}: alias {alias!r} points at {version}, which is not registered")
            unregistered += [f"{cat}/{name} {v}" for v in self.store.list_versions(cat, name) if v not in rows]
        return VerifyReport(checked=checked, problems=problems, unregistered=unregistered)

    # -- aliases and tags -----------------------------------------------------------------

    def aliases(self, model_name: str, category: str | None = None) -> dict[str, str]:
        """alias → version for one model."""
        return self.index.aliases(*self.resolve_model(model_name, category))

    def alias_history(self, model_name: str, alias: str | None = None, category: str | None = None) -> list[AliasMove]:
        """Every move of the model's aliases (or of one), oldest first: who, when, from, to, why."""
        return self.index.history(*self.resolve_model(model_name, category), alias)

    def set_alias(
        self, model_name: str, alias: str, version: str, reason: str | None = None, category: str | None = None
    ) -> RollbackResult:
        """Point `alias` at an existing, intact `version`; raise VersionError when it cannot."""
        category, name = self.resolve_model(model_name, category)
        validate_name(alias, "alias")
        self.require(category, name, "admin", f"set_alias:{alias}")
        self._require_row(category, name, version)
        try:
            self.store.open(category, name, version)  # safety check + manifest verification
        except (StoreError, ModelNotFoundError) as exc:
            raise VersionError(f"{category}/{name} {version} cannot be served: {exc}") from exc
        with self.index.writing(f"{category}/{name}") as conn:
            if self.index.row(category, name, version, conn) is None:
                raise VersionError(f"{category}/{name} {version} was deleted meanwhile")
            before = self.index.move_alias(conn, category, name, alias, version, actor=self.actor, reason=reason)
        return RollbackResult(True, f"{category}/{name}", alias, version, before, reason or "")

    def rollback_version(
        self,
        model_name: str,
        target_version: str | None = None,
        *,
        alias: str = "current",
        reason: str | None = None,
        category: str | None = None,
    ) -> RollbackResult:
        """Move `alias` back to `target_version` (default: where it pointed before its last move).

        Never raises for a refused rollback: the result is falsy and `reason` says why (unknown
        version, damaged files, ...). The move is recorded in the alias history. A user without
        `admin` on the model gets AccessDenied: a refusal by policy is raised, not returned.
        """
        model = model_name
        try:
            resolved: tuple[str, str] | None = self.resolve_model(model_name, category)
        except CompanionError:
            resolved = None  # reported in the result below
        if resolved is not None:
            self.require(*resolved, "admin", "rollback")
        try:
            category, name = self.resolve_model(model_name, category)
            model = f"{category}/{name}"
            if target_version is None:
                moves = self.index.history(category, name, alias)
                target_version = moves[-1].from_version if moves else None
                if target_version is None:
                    raise VersionError(f"alias {alias!r} of {model} has no earlier version to roll back to")
            why = reason or f"rollback to {target_version}"
            return self.set_alias(model, alias, target_version, why)
        except CompanionError as exc:
            return RollbackResult(False, model, alias, target_version, reason=str(exc))

    def tag(self, model_name: str, version: str, key: str, value: str = "", category: str | None = None) -> None:
        """Label a version with `key` (= `value`), e.g. `tag("luna", "1.2.0", "approved", "qa")`."""
        category, name = self.resolve_model(model_name, category)
        validate_name(key, "tag")
        self.require(category, name, "admin", f"tag:{key}")
        self.index.set_tag(category, name, validate_version(version), key, value, self.actor)

    # -- removing -------------------------------------------------------------------------

    def delete_version(self, model_name: str, version: str, category: str | None = None) -> None:
        """Remove a version that no alias points at: its row first, then its folder."""
        category, name = self.resolve_model(model_name, category)
        self.require(category, name, "admin", "delete_version")
        with self.store.lock(category, name):
            with self.index.writing(f"{category}/{name}") as conn:
                self.index.delete_version(conn, category, name, validate_version(version))
            if self.store.version_dir(category, name, version).is_dir():
                self.store.delete_version(category, name, version)
