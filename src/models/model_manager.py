"""ModelManager: `load_model(category, name)` → a cached, ready model.

Resolution, in order: the config entry for `(category, name)` (also under the seed's suffixed
names: `luna_personality` → `luna`); if the model has versions with a `current` alias (see
`models.lifecycle.version_control`), that version's store folder; else the entry's `path` (see
`models.paths`): a folder, a built-in model, a model in the store (its `current` version, else
the latest), an OpenAI-compatible server. Loading goes through the loader registered for the
entry's `type` (`models.registry`).

Loaded models are cached per `(category, name)`. The cache is thread-safe: concurrent first
loads of one model load it once (a per-key lock), and loads of different models proceed in
parallel. A warm `load_model` re-reads the model's alias (one indexed database read, and only
for models that have a store folder) and reloads when the alias has moved, so a rollback or an
applied update takes effect on the next call.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.config import Config, EffectiveConfig, ModelEntry, builtin_config_path, load_config, load_effective_config
from models.context import Context, current, reset_default_contexts
from models.errors import CompanionError, ConfigError, ModelNotFoundError, UnknownModelError
from models.gate import guard, inside_checked_call, is_inside
from models.home import config_path, store_root
from models.lifecycle.version_index import VersionIndex
from models.monitoring.instrument import attach
from models.paths import PathRef, builtin_dir, classify_path, name_candidates
from models.registry import LoadRequest, get_loader
from models.security.manager import ModelSecurityManager
from models.store import ModelStore, validate_name

__all__ = ["ModelInfo", "ModelManager", "default_manager", "reset_default_manager", "resolve_path"]


@dataclass(frozen=True)
class ModelInfo:
    category: str
    name: str
    type: str
    path: str
    source: str
    loaded: bool
    description: str | None = None


class ModelManager:
    """Loads models named in config, once, and keeps them."""

    def __init__(
        self, config_path: str | Path | None = None, alias: str = "current", *, context: Context | None = None
    ) -> None:
        self.context = context or current()
        self._config_path = Path(config_path) if config_path else None
        self.alias = alias
        self._served: dict[tuple[str, str], tuple[str, str, str] | None] = {}
        self._index: Any = None
        self._store_root: Path | None = None
        self._config: EffectiveConfig | None = None
        self._config_stamp: tuple[int, ...] | None = None
        self._cache: dict[tuple[str, str], Any] = {}
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self._security: Any = None
        self.load_times: dict[tuple[str, str], float] = {}

    # --- config -------------------------------------------------------------------------

    @property
    def config(self) -> EffectiveConfig:
        """The effective config, reloaded when a config file changes on disk."""
        stamp = self._stamp()
        if self._config is None or stamp != self._config_stamp:
            self._config = load_effective_config(self._config_path, home=self.context.home)
            self._config_stamp = stamp
        return self._config

    def _stamp(self) -> tuple[int, ...]:
        """The config files' modification times (-1 for a missing one). A served turn asks for
        the config a dozen times, so this is two `os.stat` calls and nothing more."""
        files = (builtin_config_path(), self._config_path or config_path(self.context.home))
        return tuple(_mtime(f) for f in files)

    def canonical(self, category: str, name: str) -> tuple[str, ModelEntry]:
        """The config name that `name` refers to, and its entry; UnknownModelError otherwise."""
        cfg = self.config
        for cand in name_candidates(name, category):
            entry = cfg.entry(category, cand)
            if entry is not None:
                return cand, entry
        for cand in name_candidates(name, category):
            entry = _store_entry(category, cand)
            if entry is not None:
                return cand, entry
        if category not in cfg.config.models:
            raise UnknownModelError(category, category, cfg.categories(), what="model category")
        raise UnknownModelError(category, name, cfg.names(category))

    def find(self, name: str) -> tuple[str, str]:
        """`(category, name)` for a bare model name, searched in every category."""
        cfg = self.config
        hits = []
        for cat in cfg.categories():
            for cand in name_candidates(name, cat):
                if cfg.entry(cat, cand) is not None:
                    hits.append((cat, cand))
                    break
        if not hits:  # a model that only exists in the store (trained or imported, never configured)
            for cat, stored in ModelStore().list_models():
                if stored in name_candidates(name, cat) and _store_entry(cat, stored) is not None:
                    hits.append((cat, stored))
        if len(hits) == 1:
            return hits[0]
        if not hits:
            every = [n for c in cfg.categories() for n in cfg.names(c)]
            raise UnknownModelError("model", name, every)
        options = ", ".join(f"{c}/{n}" for c, n in hits)
        raise ModelNotFoundError(
            f"model name {name!r} is ambiguous ({options}): say which, e.g. {options.split(',')[0]}"
        )

    # --- loading ------------------------------------------------------------------------

    def load_model(self, category: str, name: str, *, user: str | None = None) -> Any:
        """Load (or return the cached) model `name` of `category`.

        Needs `read` on the model for `user` (default: the acting user, see docs/security.md);
        generating with the result needs `generate`. Raises AccessDenied otherwise.
        """
        cname, entry = self.canonical(category, name)
        key = (category, cname)
        checked = self._check_load(category, cname, user)
        cached = self._cache.get(key)
        if cached is not None and self._still_current(key):
            return cached
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            cached = self._cache.get(key)
            if cached is not None and self._still_current(key):
                return cached
            t0 = time.perf_counter()
            if not checked:  # a cold load is audited (a warm one was checked in memory above)
                self.security.require(user, f"{category}/{cname}", "read", action="load")
            ref = self.resolve(category, cname)

            with inside_checked_call():  # models it loads for itself (a personality's base) are part of it
                model = self._build(category, cname, entry, ref)
            self.load_times[key] = time.perf_counter() - t0

            model = attach(model, category, cname, ref.version)
            model = guard(model, self.security, category, cname)  # `generate` checked at the model's gate
            self._cache[key] = model
            served = None
            if ref.raw.startswith("store:") and ref.category and ref.name and ref.version:
                served = (ref.category, ref.name, ref.version)
            self._served[key] = served
            return model

    # --- access control -------------------------------------------------------------------

    @property
    def security(self) -> Any:
        """The `ModelSecurityManager` over this manager's config (models.security)."""
        if self._security is None:
            self._security = ModelSecurityManager(manager=self)
        return self._security

    def _check_load(self, category: str, name: str, user: str | None) -> bool:
        """True if the load needs no audited check: it is nested inside a checked request.
        Otherwise decide in memory; a denial is audited and raised here."""

        if is_inside():
            return True
        label = f"{category}/{name}"
        sec = self.security
        if not sec.decide(sec.user(user), label, "read"):
            sec.require(user, label, "read", action="load")
        return False

    # --- versions and aliases -------------------------------------------------------------

    @property
    def index(self) -> Any:
        """The version index (`models.lifecycle.version_index.VersionIndex`) aliases are read from."""
        if self._index is None:
            self._index = VersionIndex.shared(self.context.database_url_for(self.config))
        return self._index

    def _alias_version(self, category: str, name: str) -> str | None:
        """The version this manager's alias points at, or None; no database touched for a model
        that has never been in the store (one `stat`)."""
        if self._store_root is None:
            self._store_root = store_root(self.context.home)
        if not (self._store_root / category / name).is_dir():
            return None
        return self.index.alias(category, name, self.alias)

    def _still_current(self, key: tuple[str, str]) -> bool:
        served = self._served.get(key)
        if served is None:  # not served from a version: only a newly created alias changes that
            return self._alias_version(*key) is None
        category, name, version = served
        return self._alias_version(category, name) in (None, version)

    def resolve(self, category: str, name: str) -> PathRef:
        """Where `load_model(category, name)` would load from now (nothing is loaded)."""
        cname, entry = self.canonical(category, name)
        pinned = entry.path.startswith("store:") and "@" in entry.path
        version = None if pinned else self._alias_version(category, cname)
        if version is not None:
            folder = ModelStore().open(category, cname, version)
            raw = f"store:{category}/{cname}@{version}"
            return PathRef("folder", raw, folder=folder, category=category, name=cname, version=version)
        base = self.config.base_dirs.get((category, cname), builtin_dir())  # store-only models have no file
        return resolve_path(entry.path, base, config=self.config, hint=(category, cname))

    def _build(self, category: str, name: str, entry: ModelEntry, ref: PathRef) -> Any:
        try:
            params = entry.typed_parameters()
        except Exception as exc:
            raise ConfigError(
                self.config.origin[(category, name)], [f"models.{category}.{name}.parameters: {exc}"]
            ) from exc
        request = LoadRequest(category=category, name=name, entry=entry, ref=ref, params=params)
        return get_loader(entry.type)(self, request)

    def unload(self, category: str | None = None, name: str | None = None) -> int:
        """Drop cached models (all, a category, or one); returns how many were dropped."""
        with self._lock:
            keys = [
                k
                for k in self._cache
                if (category is None or k[0] == category) and (name is None or k[1] in name_candidates(name, k[0]))
            ]
            for k in keys:
                model = self._cache.pop(k)
                close = getattr(model, "close", None)
                if callable(close):
                    close()
            return len(keys)

    def is_loaded(self, category: str, name: str) -> bool:
        try:
            cname, _ = self.canonical(category, name)
        except UnknownModelError:
            return False
        return (category, cname) in self._cache

    def list_models(self, category: str | None = None) -> list[ModelInfo]:
        """Every configured model (built-in and the user's), loaded or not."""
        cfg = self.config
        out = []
        for cat in cfg.categories():
            if category is not None and cat != category:
                continue
            for name in cfg.names(cat):
                e = cfg.entry(cat, name)
                if e is None:
                    continue
                out.append(
                    ModelInfo(
                        cat, name, e.type, e.path, cfg.origin[(cat, name)], (cat, name) in self._cache, e.description
                    )
                )
        return out


# ----------------------------------------------------------------------------- resolution


def default_manager() -> ModelManager:
    """The manager of the active context (`models.context.current()`): what the seed's
    zero-argument APIs, the framework, personality loaders and feedback all use."""
    return current().manager


def reset_default_manager() -> None:
    """Forget the environment's default contexts and their cached models (tests)."""
    reset_default_contexts()


def _default_config() -> EffectiveConfig:
    """The config a bare `TransformerModel(path)` resolves names against (re-read on change)."""
    return default_manager().config


def _builtin_entry(category: str, name: str) -> ModelEntry | None:

    path = builtin_config_path()
    return _builtin_config(path, path.stat().st_mtime_ns).entry(category, name)


@functools.lru_cache(maxsize=4)
def _builtin_config(path: Path, _mtime_ns: int) -> Config:
    """The built-in layer alone, parsed once per file version (it is package data)."""
    return load_config(path)


#: companion.json `kind` → loader type, for models that exist only in the store.
_KIND_TYPES = {"personality": "personality", "personalization": "personalization"}


def _store_entry(category: str, name: str) -> ModelEntry | None:
    """A config entry for a model published in the store without one (e.g. trained for a new
    user): `store:<category>/<name>`, its type from the newest version's `companion.json`."""
    import json

    try:
        validate_name(category, "category")
        validate_name(name)
    except CompanionError:
        return None
    store = ModelStore()
    latest = store.latest_version(category, name)
    if latest is None:
        return None
    meta_path = store.version_dir(category, name, latest) / "companion.json"
    try:
        kind = json.loads(meta_path.read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError):
        kind = None
    return ModelEntry(type=_KIND_TYPES.get(str(kind), "transformer"), path=f"store:{category}/{name}")


def resolve_path(
    raw: str | Path,
    base: Path | None = None,
    *,
    config: EffectiveConfig | None = None,
    hint: tuple[str, str] | None = None,
    _seen: frozenset[tuple[str, str, str]] = frozenset(),
) -> PathRef:
    """Turn a model path into something loadable: a folder (verified if in the store or
    built-in), or an OpenAI model id. Raises ModelNotFoundError with the places it looked."""
    ref = classify_path(str(raw), base or Path.cwd())
    if ref.kind in ("folder", "builtin", "openai", "gguf"):
        return ref
    if ref.kind == "missing":
        raise ModelNotFoundError(ref.problem or f"model path {raw!r} not found")
    cfg = config or _default_config()
    category, name = ref.category or "", ref.name or ""
    seen = _seen | ({("config", *hint)} if hint else set())
    found = _from_store(category, name, ref.version)
    if found is not None:
        return found
    # Not in the store: the config's entry of that name, else the built-in layer's (so the
    # seed's `path: models/personality/luna_model` finds the built-in Luna until one is trained).
    for cand in name_candidates(name, category):
        layers = (("config", cfg.entry(category, cand)), ("builtin", _builtin_entry(category, cand)))
        for where, entry in layers:
            if entry is None or (where, category, cand) in seen:
                continue
            if where == "config":
                bdir = cfg.base_dirs.get((category, cand), builtin_dir())
            else:
                bdir = builtin_dir()
            return resolve_path(entry.path, bdir, config=cfg, _seen=seen | {(where, category, cand)})
    known = cfg.names(category)
    if known:
        raise UnknownModelError(category, name, known)
    raise ModelNotFoundError(
        f"model path {raw!r}: no folder there and no {category!r} model named {name!r} in the store or config"
    )


def _from_store(category: str, name: str, version: str | None) -> PathRef | None:
    try:
        from models.store import ModelStore
    except ImportError:  # pragma: no cover - the store lands with the foundation
        return None
    store = ModelStore()
    for cand in name_candidates(name, category):
        if store.list_versions(category, cand):
            if version is None:
                version = _current_version(category, cand)
            folder = store.open(category, cand, version)
            return PathRef(
                "folder", f"store:{category}/{cand}", folder=folder, category=category, name=cand, version=folder.name
            )
    return None


def _current_version(category: str, name: str) -> str | None:
    """The `current` alias of a store model, or None (then the latest version is used)."""

    return VersionIndex.shared().alias(category, name, "current")


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1
