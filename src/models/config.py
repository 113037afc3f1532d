"""The YAML configuration: which models exist, of which type, where their files are.

Shape (the seed's, plus optional top-level sections that later features add)::

    models:
      personality:
        luna:
          type: "transformer"
          path: "models/personality/luna_model"
          parameters:
            max_length: 512
            temperature: 0.8

Loading is strict and kind: `yaml.safe_load` only (no `!!python/...` tags), duplicate keys
refused, every problem (unknown key, wrong type, bad value, missing path) collected into one
`ConfigError` that names the file and the key path, with a "did you mean" where one fits.

Layers: the built-in config (package data) always provides the embedded models; the user's
`COMPANION_HOME/config.yaml` overrides it entry by entry (same `type` and `path`: parameters
merge key by key; otherwise the user's entry replaces the built-in one).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.errors import ConfigError
from models.lifecycle.update_config import UpdatesConfig
from models.privacy.settings import PrivacyConfig
from models.security.policy import SecurityConfig
from models.training_data.datasource import DataSourceConfig

__all__ = [
    "PARAMS",
    "Config",
    "ModelEntry",
    "ParamsRegistry",
    "builtin_config_path",
    "load_config",
    "load_effective_config",
    "parse_config",
]

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_.-"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TransformerParams(_Strict):
    """Parameters of `type: transformer` (and the generation part of other types)."""

    max_length: int = Field(512, ge=1, le=1_000_000, description="Most new tokens per reply.")
    temperature: float = Field(0.8, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(50, ge=0)
    repetition_penalty: float = Field(1.1, gt=0.0, le=5.0)
    seed: int | None = None
    engine: str = Field("auto", description="auto | llamacpp | fast | hf | openai (or a plugin's engine)")
    base_url: str | None = Field(None, description="OpenAI-compatible server, e.g. http://localhost:11434/v1")
    model: str | None = Field(None, description="Model id on the OpenAI-compatible server.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key.")
    threads: int | None = Field(None, ge=1, le=256)
    threads_batch: int | None = Field(
        None, ge=1, le=256, description="Threads for prompt processing (llama.cpp's --threads-batch); default: threads."
    )
    dtype: str = Field(
        "auto",
        description="auto (bfloat16 weights stay bfloat16, others load as float32) | float32 | bfloat16 | float16",
    )

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: str) -> str:
        from models.plugins import engines  # built-in engines and those of installed plugins

        allowed = ["auto", *(e.name for e in engines())]
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError("must be auto, float32, bfloat16 or float16")
        return v


class ParamsRegistry:
    """Model type → the pydantic model that validates its `parameters:` block.

    Loader types register here (and in `models.registry`) so a config can be validated
    without importing torch.
    """

    def get(self, type_name: str) -> type[BaseModel] | None:
        from models.plugins import model_types

        spec = model_types().get(type_name)
        return spec.params if spec is not None else None

    def names(self) -> list[str]:
        from models.plugins import model_types

        return sorted(model_types())


PARAMS = ParamsRegistry()


class ModelEntry(_Strict):
    """One model in the config."""

    type: str
    path: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)

    def typed_parameters(self) -> BaseModel:
        model = PARAMS.get(self.type)
        if model is None:
            raise ConfigError("config", [f"unknown model type {self.type!r}"])
        return model.model_validate(self.parameters)


class Config(_Strict):
    """The whole file. Unknown top-level sections are errors (typos must not pass silently)."""

    models: dict[str, dict[str, ModelEntry]] = Field(default_factory=dict)
    database_url: str | None = None
    data_sources: dict[str, DataSourceConfig] = Field(
        default_factory=dict, description="Named training-data sources (docs/data.md)."
    )
    updates: UpdatesConfig = Field(default_factory=UpdatesConfig)
    security: SecurityConfig = Field(
        default_factory=SecurityConfig, description="Who may do what to which model (docs/security.md)."
    )
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig, description="Anonymization, retention, encryption (docs/privacy.md)."
    )

    # Where the file came from, for relative paths and messages (not part of the YAML).
    source: str | None = Field(None, exclude=True)
    base_dir: str | None = Field(None, exclude=True)

    def entry(self, category: str, name: str) -> ModelEntry | None:
        return self.models.get(category, {}).get(name)

    def names(self, category: str) -> list[str]:
        return sorted(self.models.get(category, {}))


# ----------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (YAML would keep the last silently)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _value in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen[key] = True
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.constructor.ConstructorError as exc:
        where = f"line {exc.problem_mark.line + 1}" if exc.problem_mark else "?"
        problem = exc.problem or str(exc)
        if "merge" in problem.lower() or "<<" in str(getattr(exc, "context", "") or ""):
            problem = f"{problem} (YAML merge keys `<<:` are not supported: write the keys out)"
        elif "python/" in problem or "could not determine a constructor" in problem:
            problem = f"{problem} (only plain YAML is allowed; Python tags are refused)"
        raise ConfigError(source, [f"{where}: {problem}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}: malformed YAML: {problem}"]) from None


# ----------------------------------------------------------------------------- validation


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def _suggest(bad: str, options: list[str]) -> str:
    close = difflib.get_close_matches(bad, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _pydantic_problems(exc: ValidationError, prefix: tuple[Any, ...], model: type[BaseModel]) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            fields = list(model.model_fields)
            sub = model
            for part in err["loc"][:-1]:
                ann = sub.model_fields.get(str(part)) if hasattr(sub, "model_fields") else None
                sub = getattr(ann, "annotation", None) if ann else None
                fields = list(getattr(sub, "model_fields", {}) or [])
            out.append(f"{_loc(loc)}: unknown key{_suggest(str(err['loc'][-1]), fields)}")
        elif err["type"] == "missing":
            out.append(f"{_loc(loc)}: required key is missing")
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            out.append(f"{_loc(loc)}: {err['msg']} (got {shown})")
    return out


def _check_name(kind: str, name: Any, where: str) -> str | None:
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", name):
        return f"{where}: invalid {kind} name {name!r}: use lowercase letters, digits, '_', '.', '-' (max 64)"
    return None


PathCheck = Callable[[str, Path], str | None]


def _default_path_check(raw: str, base: Path) -> str | None:
    """None if `raw` can be resolved, else the reason. See `models.model_manager` for the rules."""
    from models.paths import classify_path

    return classify_path(raw, base).problem


def parse_config(data: Any, source: str, base_dir: Path, check_paths: PathCheck | None = None) -> Config:
    """Validate already-parsed YAML; raise one ConfigError listing every problem."""
    problems: list[str] = []
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping, got {type(data).__name__}"])
    models = data.get("models", {}) or {}
    if not isinstance(models, dict):
        problems.append(f"models: expected a mapping of categories, got {type(models).__name__}")
        models = {}
    check = check_paths or _default_path_check
    for category, entries in models.items():
        where = f"models.{category}"
        if (p := _check_name("category", category, where)) is not None:
            problems.append(p)
            continue
        if not isinstance(entries, dict):
            problems.append(f"{where}: expected a mapping of model names, got {type(entries).__name__}")
            continue
        for name, entry in entries.items():
            ew = f"{where}.{name}"
            if (p := _check_name("model", name, ew)) is not None:
                problems.append(p)
                continue
            problems += _entry_problems(entry, ew, base_dir, check)
    top = {k: v for k, v in data.items() if k != "models"}
    try:
        cfg = Config.model_validate({**top, "models": {}})
    except ValidationError as exc:
        problems += _pydantic_problems(exc, (), Config)
        cfg = None
    if cfg is not None:
        problems += cfg.security.problems()
    if problems or cfg is None:
        raise ConfigError(source, problems)
    validated = {c: {n: ModelEntry.model_validate(e) for n, e in es.items()} for c, es in models.items()}
    return cfg.model_copy(update={"models": validated, "source": source, "base_dir": str(base_dir)})


def _entry_problems(entry: Any, where: str, base_dir: Path, check: PathCheck) -> list[str]:
    if not isinstance(entry, dict):
        return [f"{where}: expected a mapping with type, path, parameters; got {type(entry).__name__}"]
    problems: list[str] = []
    try:
        ModelEntry.model_validate(entry)
    except ValidationError as exc:
        problems += [f"{where}.{p}" for p in _pydantic_problems(exc, (), ModelEntry)]
    # Keep going with whatever is well-formed, so one run reports every problem.
    type_name, path, params = entry.get("type"), entry.get("path"), entry.get("parameters", {})
    if isinstance(type_name, str):
        params_model = PARAMS.get(type_name)
        if params_model is None:
            problems.append(
                f"{where}.type: unknown model type {type_name!r}{_suggest(type_name, PARAMS.names())}; "
                f"known: {', '.join(PARAMS.names())}"
            )
        elif isinstance(params, dict):
            try:
                params_model.model_validate(params)
            except ValidationError as exc:
                problems += _pydantic_problems(exc, (*where.split("."), "parameters"), params_model)
    if isinstance(path, str) and (reason := check(path, base_dir)) is not None:
        problems.append(f"{where}.path: {reason}")
    return problems


def load_config(path: str | Path, check_paths: PathCheck | None = None) -> Config:
    """Load and validate one YAML file."""
    from models import limits

    path = Path(path)
    cap = limits.LIMITS.config_bytes
    try:
        size = path.stat().st_size
        if size > cap:  # refused before reading: a 100 MB config grew to 5 GB once parsed
            raise ConfigError(str(path), [f"{size:,} bytes, over the limit of {cap:,} (models.limits: config_bytes)"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [f"not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    data = _read_yaml(text, str(path))
    return parse_config(data, str(path), path.parent.resolve(), check_paths)


@functools.cache
def builtin_config_path() -> Path:
    """The package's own config.yaml (where the installed package is: it does not move while
    the process runs, so it is looked up once)."""
    return Path(str(resources.files("models") / "builtin" / "config.yaml"))


@dataclass
class EffectiveConfig:
    """The built-in config with the user's layered on top, and where each entry came from."""

    config: Config
    origin: dict[tuple[str, str], str]
    base_dirs: dict[tuple[str, str], Path]
    files: list[str]

    def entry(self, category: str, name: str) -> ModelEntry | None:
        return self.config.entry(category, name)

    def base_dir(self, category: str, name: str) -> Path:
        return self.base_dirs[(category, name)]

    def categories(self) -> list[str]:
        return sorted(self.config.models)

    def names(self, category: str) -> list[str]:
        return self.config.names(category)

    @property
    def security(self) -> SecurityConfig:
        """The merged `security:` policy of every layer."""
        return self.config.security

    @property
    def privacy(self) -> PrivacyConfig:
        return self.config.privacy


def _merge_entry(base: ModelEntry, over: ModelEntry) -> ModelEntry:
    if base.type != over.type or base.path != over.path:
        return over
    return over.model_copy(
        update={
            "parameters": {**base.parameters, **over.parameters},
            "description": over.description or base.description,
        }
    )


_WARNED: set[tuple[str, str]] = set()


def _warn_plain_personalities(layer: Config, builtin: Config) -> None:
    """A personality entry of type `transformer` over a card personality (or on a remote model)
    loads a plain model: no card, no emotions. Say so once, with what to write instead."""
    import logging

    for name, entry in (layer.models.get("personality") or {}).items():
        card = builtin.models.get("personality", {}).get(name)
        remote = entry.path.startswith("openai:")
        if entry.type == "personality" or not (remote or (card is not None and card.type == "personality")):
            continue
        key = (str(layer.source), name)
        if key in _WARNED:
            continue
        _WARNED.add(key)
        card_path = card.path if card is not None and card.type == "personality" else "PERSONALITY_FOLDER"
        logging.getLogger("models.config").warning(
            "%s: models.personality.%s has type %r, so it loads a plain model with no card (no greeting, "
            "no emotions). To give that model %s's card, write: type: personality, path: %s, "
            "parameters: {base_model: %s}",
            layer.source, name, entry.type, name, card_path,
            entry.path if remote else "CATEGORY/NAME or a model path",
        )  # fmt: skip


def load_effective_config(user_config: str | Path | None = None, home: Path | None = None) -> EffectiveConfig:
    """Built-in config + the user's (`<home>/config.yaml` unless a path is given; the active
    context's home by default)."""
    from models.home import config_path

    builtin_path = builtin_config_path()
    layers = [load_config(builtin_path)]
    user = Path(user_config) if user_config else config_path(home)
    if user_config or user.exists():
        layers.append(load_config(user))
    models: dict[str, dict[str, ModelEntry]] = {}
    origin: dict[tuple[str, str], str] = {}
    base_dirs: dict[tuple[str, str], Path] = {}
    database_url = None
    data_sources: dict[str, DataSourceConfig] = {}
    security = SecurityConfig()
    privacy = PrivacyConfig()
    for layer in layers:
        security = security.merged(layer.security)
        privacy = privacy.merged(layer.privacy)
        for key, source in layer.data_sources.items():
            data_sources[key] = source.model_copy(update={"base_dir": layer.base_dir})
        for cat, entries in layer.models.items():
            for name, e in entries.items():
                prev = models.setdefault(cat, {}).get(name)
                models[cat][name] = _merge_entry(prev, e) if prev else e
                origin[(cat, name)] = str(layer.source)
                base_dirs[(cat, name)] = Path(layer.base_dir or ".")
        database_url = layer.database_url or database_url
    for layer in layers[1:]:
        _warn_plain_personalities(layer, layers[0])
    cfg = Config(
        models=models, database_url=database_url, data_sources=data_sources, security=security, privacy=privacy
    )
    return EffectiveConfig(cfg, origin, base_dirs, [str(layer.source) for layer in layers])
