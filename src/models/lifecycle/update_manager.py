"""ModelUpdateManager: signed update catalogs, verified installs, automatic rollback.

    update_manager = ModelUpdateManager()
    available_updates = update_manager.check_updates()       # [] when no catalogs are configured
    update_result = update_manager.apply_updates(updates=available_updates, backup_existing=True)

**Checking.** Each catalog in `updates.catalogs` (config.yaml) is fetched, its Ed25519 signature
checked against `updates.trusted_keys`, its expiry checked, and its `catalog_version` compared with
the newest one seen from that source (kept in the database): an older catalog, or the same number
with different content, is refused (rollback and replay protection). A refused catalog never
stops the others; `check_updates().refused` says why. An update is listed for a model this
installation knows (config or store) when the catalog has a version newer than its alias.

**Applying**, per update, in this order; any failure leaves everything as it was:
1. download every file into a staging folder inside the store, with a progress bar, refusing
   anything longer than the listed size and checking size and sha256 of each file;
2. refuse unsafe files (pickles), then publish the folder as the catalog's version (one rename)
   and register it, not yet served;
3. load it and generate a smoke-test reply;
4. keep the previous version (`backup_existing`, tagged `backup`; with `archive=`, also a
   `.tar.gz` of it), then move the alias in one transaction, only if nobody moved it meanwhile.
A failure removes what step 2 installed and reports the update as rolled back with the reason.
The result lists what was applied, skipped and rolled back, and is falsy if anything rolled back.
"""

from __future__ import annotations

import contextlib
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from models import db
from models.errors import CatalogError, CompanionError, UnknownModelError, UpdateError, VersionError
from models.lifecycle.catalog import CatalogFile, CatalogModel, verify_catalog
from models.lifecycle.update_config import UpdatesConfig
from models.lifecycle.update_sources import CatalogSource, open_source
from models.lifecycle.version_control import ModelVersionControl
from models.lifecycle.version_diff import manifest_files
from models.lifecycle.version_index import CatalogSeen
from models.lifecycle.version_records import VERSION_FORMAT, write_json_atomic
from models.store import check_safe_files, parse_version

__all__ = ["AvailableUpdate", "ModelUpdateManager", "UpdateList", "UpdateOutcome", "UpdateResult", "smoke_test"]

SmokeTest = Callable[[Path], str]


_SMOKE_PROMPT = "Hello! How are you today?"


def smoke_test(folder: Path, manager: Any = None, category: str | None = None, name: str | None = None) -> str:
    """Load the model in `folder` and generate a short reply; raise if either fails.

    With a manager and a model it knows, the model is loaded by its config entry's loader (a
    `personality` folder through the personality loader, ...); otherwise as a transformer.
    """
    from models.transformer_model import TransformerModel

    model = _load_for_smoke(folder, manager, category, name)
    try:
        if hasattr(model, "generate_response"):
            reply = str(model.generate_response(message=_SMOKE_PROMPT, max_length=8, seed=0))
        else:
            reply = model.generate(_SMOKE_PROMPT, max_length=8, seed=0)
    finally:
        if isinstance(model, TransformerModel):
            model.close()
    if not isinstance(reply, str):
        raise UpdateError(f"the smoke test of {folder} produced {type(reply).__name__}, not text")
    return reply


def _load_for_smoke(folder: Path, manager: Any, category: str | None, name: str | None) -> Any:
    from models.paths import PathRef
    from models.registry import LoadRequest, get_loader
    from models.transformer_model import TransformerModel

    entry = None
    if manager is not None and category and name:
        try:
            name, entry = manager.canonical(category, name)
        except UnknownModelError:
            entry = None
    if entry is None:
        return TransformerModel(str(folder), max_length=8, seed=0)
    ref = PathRef("folder", f"store:{category}/{name}@{folder.name}", folder=folder, category=category, name=name)
    request = LoadRequest(category=str(category), name=name, entry=entry, ref=ref, params=entry.typed_parameters())
    return get_loader(entry.type)(manager, request)


@dataclass(frozen=True)
class AvailableUpdate:
    """A newer model version offered by a verified catalog."""

    source: str
    category: str
    name: str
    version: str
    current: str | None
    notes: str
    files: tuple[CatalogFile, ...]
    catalog_version: int
    keyid: str
    author: str | None = None
    created: str | None = None
    opened_source: CatalogSource | None = field(default=None, repr=False, compare=False)

    @property
    def model(self) -> str:
        return f"{self.category}/{self.name}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "opened_source"}
        data["files"] = [f.model_dump() for f in self.files]
        return {**data, "model": self.model, "size": self.size}


class UpdateList(list[AvailableUpdate]):
    """The available updates; `refused` holds `(source, reason)` for catalogs that were refused."""

    def __init__(self, items: Sequence[AvailableUpdate] = ()) -> None:
        super().__init__(items)
        self.refused: list[tuple[str, str]] = []


Status = Literal["applied", "skipped", "rolled_back"]


@dataclass(frozen=True)
class UpdateOutcome:
    """What happened to one update."""

    model: str
    version: str
    status: Status
    reason: str
    previous: str | None = None
    reply: str | None = None
    archive: str | None = None


@dataclass(frozen=True)
class UpdateResult:
    """Every update's outcome; truthy when nothing had to be rolled back."""

    outcomes: list[UpdateOutcome]

    def _with(self, status: Status) -> list[UpdateOutcome]:
        return [o for o in self.outcomes if o.status == status]

    @property
    def applied(self) -> list[UpdateOutcome]:
        return self._with("applied")

    @property
    def skipped(self) -> list[UpdateOutcome]:
        return self._with("skipped")

    @property
    def rolled_back(self) -> list[UpdateOutcome]:
        return self._with("rolled_back")

    @property
    def success(self) -> bool:
        return not self.rolled_back

    def __bool__(self) -> bool:
        return self.success

    def to_json(self) -> dict[str, Any]:
        return {"success": self.success, "outcomes": [asdict(o) for o in self.outcomes]}


class _Skip(Exception):
    """An update that does not apply here (not an error)."""


class ModelUpdateManager:
    """Checks signed catalogs for newer model versions and installs them safely."""

    def __init__(
        self,
        config: UpdatesConfig | None = None,
        *,
        version_control: ModelVersionControl | None = None,
        smoke: SmokeTest | None = None,
        progress: bool | None = None,
        config_path: str | Path | None = None,
        user: str | None = None,
    ) -> None:
        self.vc = version_control or ModelVersionControl(config_path=config_path)
        if user is not None:  # the access-control user (docs/security.md); else the acting user
            self.vc.user = user
        from models.config import builtin_config_path

        builtin = builtin_config_path().resolve()
        user_files = [f for f in self.vc.manager.config.files if Path(f).resolve() != builtin]
        self.base_dir = Path(user_files[-1]).parent if user_files else Path.cwd()
        self.config = config if config is not None else self._user_updates(user_files)
        self.smoke = smoke
        self.progress = sys.stderr.isatty() if progress is None else progress

    @staticmethod
    def _user_updates(user_files: list[str]) -> UpdatesConfig:
        from models.config import load_config

        return load_config(user_files[-1]).updates if user_files else UpdatesConfig()

    # -- checking -------------------------------------------------------------------------

    def check_updates(self, *, strict: bool = False) -> UpdateList:
        """Updates offered by every configured catalog that verifies; `[]` when none are configured.

        `strict=True` raises CatalogError if any catalog was refused.
        """
        found = UpdateList()
        best: dict[tuple[str, str], AvailableUpdate] = {}
        for spec in self.config.catalogs:
            try:
                for update in self._check_source(open_source(spec, self.base_dir, self.config.timeout)):
                    key = (update.category, update.name)
                    if key not in best or parse_version(update.version) > parse_version(best[key].version):
                        best[key] = update
            except CompanionError as exc:
                found.refused.append((spec, str(exc)))
            except Exception as exc:
                found.refused.append((spec, f"{spec}: unreadable catalog ({type(exc).__name__}: {exc})"))
        found.extend(best[k] for k in sorted(best))
        if strict and found.refused:
            raise CatalogError("; ".join(reason for _, reason in found.refused))
        return found

    def _check_source(self, source: CatalogSource) -> list[AvailableUpdate]:
        catalog, keyid, digest = verify_catalog(source.read_catalog(), self.config.trusted_keys, source.name)
        self._record_freshness(source.name, catalog.catalog_version, digest, catalog.expires.isoformat())
        out = []
        for entry in catalog.models:
            current = self._known_current(entry)
            if current is False:
                continue
            if current is not None and parse_version(entry.version) <= parse_version(str(current)):
                continue
            out.append(self._available(source, entry, current, catalog.catalog_version, keyid))
        return out

    @staticmethod
    def _available(
        source: CatalogSource, entry: CatalogModel, current: Any, catalog_version: int, keyid: str
    ) -> AvailableUpdate:
        files = tuple(
            f.model_copy(update={"url": f.location(entry.category, entry.name, entry.version)}) for f in entry.files
        )
        return AvailableUpdate(
            source=source.name,
            category=entry.category,
            name=entry.name,
            version=entry.version,
            current=current,
            notes=entry.notes,
            files=files,
            catalog_version=catalog_version,
            keyid=keyid,
            author=entry.author,
            created=entry.created,
            opened_source=source,
        )

    def _known_current(self, entry: CatalogModel) -> str | Literal[False] | None:
        """The local alias version, None if the model is known but unversioned, False if unknown."""
        current = self.vc.index.alias(entry.category, entry.name, self.config.alias)
        if current is not None:
            return current
        try:
            self.vc.manager.canonical(entry.category, entry.name)
        except UnknownModelError:
            return None if self.vc.store.list_versions(entry.category, entry.name) else False
        return None

    def _record_freshness(self, source: str, number: int, digest: str, expires: str) -> None:
        """Refuse a catalog older than the newest seen from `source`; remember this one."""
        index = self.vc.index
        with index.writing(f"catalog:{source}") as conn:
            seen = index.catalog_seen(source, conn)
            if seen is not None and number < seen.catalog_version:
                raise CatalogError(
                    f"{source}: catalog version {number} is older than version {seen.catalog_version} seen on "
                    f"{seen.seen_at}: refusing a rollback to an old catalog (a stale mirror or a replay attack)"
                )
            if seen is not None and number == seen.catalog_version and digest != seen.digest:
                raise CatalogError(
                    f"{source}: catalog version {number} was seen before with different content: a publisher "
                    "must bump catalog_version on every change; refusing it"
                )
            index.record_catalog(conn, CatalogSeen(source, number, digest, expires, db.utc_now()), seen is not None)

    # -- applying -------------------------------------------------------------------------

    def apply_updates(
        self,
        updates: Sequence[AvailableUpdate] | None = None,
        backup_existing: bool = True,
        *,
        archive: bool | str | Path = False,
    ) -> UpdateResult:
        """Install `updates` (default: everything `check_updates()` finds), each all-or-nothing.

        `backup_existing=True` keeps the version each update replaces (tagged `backup`), and
        `archive` (True: `COMPANION_HOME/backups`, or a folder) also writes it as a `.tar.gz`;
        with `backup_existing=False` the replaced version is deleted once the update is live.
        """
        if updates is None:
            updates = self.check_updates()
        for update in updates:  # all or nothing: a user lacking `admin` on any model changes none
            self.vc.require(update.category, update.name, "admin", f"apply_update:{update.version}")
        archive_dir = None
        if archive:
            archive_dir = self.vc.home / "backups" if archive is True else Path(archive)
        outcomes = [self._apply_one(u, backup_existing, archive_dir) for u in updates]
        return UpdateResult(outcomes)

    def _apply_one(self, update: AvailableUpdate, backup_existing: bool, archive_dir: Path | None) -> UpdateOutcome:
        alias = self.config.alias
        category, name, version = update.category, update.name, update.version
        previous = self.vc.index.alias(category, name, alias)
        outcome = _Outcome(update.model, version, previous)
        installed = False
        try:
            with self.vc.store.lock(category, name):
                self.vc.recover(category, name)  # a copy left by an interrupted apply counts as installed
            self._check_applies(update, previous)
            if self.vc.index.row(category, name, version) is None:
                self._install(update)
                installed = True
            folder = self.vc.store.open(category, name, version)
            reply = self._smoke(update, folder)
            archived = self._archive(category, name, previous, archive_dir) if backup_existing else None
            with self.vc.index.writing(f"{category}/{name}") as conn:
                why = f"update {version} from {update.source} (catalog {update.catalog_version}, key {update.keyid})"
                self.vc.index.move_alias(
                    conn, category, name, alias, version, actor=self.vc.actor, reason=why, expect=previous
                )
        except _Skip as skip:
            return outcome.done("skipped", str(skip))
        except BaseException as exc:
            undo = self._undo(update, installed)
            if not isinstance(exc, Exception):
                raise
            return outcome.done("rolled_back", f"{_reason(exc)}{undo}")
        note = ""
        if previous is not None and backup_existing:
            try:
                self.vc.tag(update.model, previous, "backup", f"kept before update to {version}")
            except CompanionError as exc:  # the update is live; only the label is missing
                note = f" (kept {previous}, but could not tag it: {exc})"
        elif previous is not None:
            note = self._drop_previous(category, name, previous)
        return outcome.done("applied", f"{alias} {previous or '(none)'} -> {version}{note}", reply, archived)

    def _check_applies(self, update: AvailableUpdate, previous: str | None) -> None:
        if previous == update.version:
            raise _Skip(f"{update.model} is already at {update.version}")
        row = self.vc.index.row(update.category, update.name, update.version)
        if row is None:
            return
        folder = self.vc.home / row["path"]
        local = {rel: e["sha256"] for rel, e in manifest_files(folder).items()}
        offered = {f.path: f.sha256 for f in update.files}
        if local != offered:
            raise _Skip(
                f"{update.model} {update.version} already exists here with different files (a local version); "
                "the catalog's cannot be installed under the same number"
            )

    def _install(self, update: AvailableUpdate) -> None:
        store = self.vc.store
        source = update.opened_source or open_source(update.source, self.base_dir, self.config.timeout)
        with store.staging(update.category, update.name) as tmp:
            with self._progress(update) as advance:
                for f in update.files:
                    source.download(f.url or f.path, tmp / f.path, f.size, f.sha256, advance)
            check_safe_files(tmp)
            meta = {
                "format": VERSION_FORMAT,
                "category": update.category,
                "name": update.name,
                "version": update.version,
                "created": db.utc_now(),
                "author": update.author or f"catalog key {update.keyid}",
                "notes": update.notes,
                "lineage": {
                    "origin": "update",
                    "source": update.source,
                    "catalog_version": update.catalog_version,
                    "keyid": update.keyid,
                    "published": update.created,
                    "parent": update.current,
                },
            }
            write_json_atomic(tmp / "version.json", meta)
            with store.lock(update.category, update.name):
                self.vc.recover(update.category, update.name)
                if store.version_dir(update.category, update.name, update.version).exists():
                    raise UpdateError(f"{update.model} {update.version} appeared meanwhile; check again")
                self.vc.publish_staged(tmp, meta, alias=None, reason=None)

    @contextlib.contextmanager
    def _progress(self, update: AvailableUpdate) -> Iterator[Callable[[int], None]]:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=Console(stderr=True), disable=not self.progress, transient=False) as bar:
            task = bar.add_task(f"{update.model} {update.version}", total=update.size)
            yield lambda n: bar.advance(task, n)

    def _smoke(self, update: AvailableUpdate, folder: Path) -> str:
        try:
            if self.smoke is not None:
                return self.smoke(folder)
            return smoke_test(folder, self.vc.manager, update.category, update.name)
        except Exception as exc:
            raise UpdateError(
                f"smoke test failed: {update.model} {update.version} does not load or generate: {_reason(exc)}"
            ) from exc

    def _archive(self, category: str, name: str, previous: str | None, archive_dir: Path | None) -> str | None:
        """Write the version an update replaces as a .tar.gz (before anything switches)."""
        if previous is None or archive_dir is None:
            return None
        folder = self.vc.store.open(category, name, previous)
        archive_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = archive_dir / f"{category}-{name}-{previous}-{stamp}.tar.gz"
        part = target.with_name(target.name + ".partial")
        with tarfile.open(part, "w:gz") as tar:
            tar.add(folder, arcname=f"{category}-{name}-{previous}")
        part.replace(target)
        return str(target)

    def _undo(self, update: AvailableUpdate, installed: bool) -> str:
        if not installed:
            return "; nothing was installed"
        try:
            self.vc.delete_version(update.model, update.version)
        except Exception as exc:  # the alias never moved, so the model still serves its old version
            return f"; the new version could not be removed ({exc}) but was never served"
        return f"; removed the new version {update.version}"

    def _drop_previous(self, category: str, name: str, previous: str) -> str:
        try:
            self.vc.delete_version(f"{category}/{name}", previous)
        except VersionError as exc:
            return f" (kept {previous}: {exc})"
        return f" (deleted {previous}: backup_existing=False)"


@dataclass
class _Outcome:
    model: str
    version: str
    previous: str | None

    def done(self, status: Status, reason: str, reply: str | None = None, archive: str | None = None) -> UpdateOutcome:
        return UpdateOutcome(self.model, self.version, status, reason, self.previous, reply, archive)


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, CompanionError) else f"{type(exc).__name__}: {exc}"
