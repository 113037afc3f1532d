"""Loader types: how a config entry of a given `type` becomes a live model object.

Explicit registry, one hook for everyone: the built-in `transformer` type registers here the
same way `personality`, `adaptive` and `hybrid` (and third-party plugins) do::

    register_loader("transformer", TransformerParams, load_transformer)

A loader is called as `loader(manager, request)` and returns the model object.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from models.config import PARAMS, ModelEntry
from models.errors import ConfigError

if TYPE_CHECKING:
    from models.model_manager import ModelManager
    from models.paths import PathRef

__all__ = ["LoadRequest", "get_loader", "loader_types", "register_loader"]


@dataclass(frozen=True)
class LoadRequest:
    """Everything a loader needs to build one model."""

    category: str
    name: str
    entry: ModelEntry
    ref: PathRef
    params: BaseModel


Loader = Callable[["ModelManager", LoadRequest], Any]

_LOADERS: dict[str, Loader] = {}
_LOCK = threading.Lock()

#: Types whose loaders live in modules imported on first use (keeps `import models` light).
_LAZY: dict[str, str] = {
    "transformer": "models.transformer_model",
    "personality": "models.personality.model",
    "personalization": "models.personalization.model",
    "adaptive": "models.adaptive_model",
    "hybrid": "models.hybrid_model",
}


def _register_light_params() -> None:
    """Parameter schemas of lazy types, from light modules (so config validation knows them)."""
    from models.personality.params import PersonalityParams

    PARAMS.register("personality", PersonalityParams)
    from models.personalization.params import HybridParams, PersonalizationParams

    PARAMS.register("personalization", PersonalizationParams)
    PARAMS.register("adaptive", PersonalizationParams)
    PARAMS.register("hybrid", HybridParams)


_register_light_params()


def register_loader(type_name: str, params: type[BaseModel], loader: Loader) -> None:
    """Register (or replace) the loader and parameter schema of a model type."""
    with _LOCK:
        PARAMS.register(type_name, params)
        _LOADERS[type_name] = loader


def register_lazy(type_name: str, module: str, params: type[BaseModel]) -> None:
    """Declare a type whose loader registers itself when `module` is imported."""
    with _LOCK:
        PARAMS.register(type_name, params)
        _LAZY[type_name] = module


def get_loader(type_name: str) -> Loader:
    if type_name not in _LOADERS and type_name in _LAZY:
        importlib.import_module(_LAZY[type_name])
    try:
        return _LOADERS[type_name]
    except KeyError:
        raise ConfigError("config", [f"unknown model type {type_name!r}; known: {', '.join(loader_types())}"]) from None


def loader_types() -> list[str]:
    return sorted(set(_LOADERS) | set(_LAZY))
