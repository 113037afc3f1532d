"""Loader types: how a config entry of a given `type` becomes a live model object.

A thin view of the one plugin registry (`models.plugins`): the built-in types register through
the same `register_model_types` hook as third-party plugins (`models.builtin_plugins`), and every
lookup loads the installed plugins first. From code::

    register_loader("my_type", MyParams, load_my_model)

A loader is called as `loader(manager, request)` and returns the model object.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from models.config import ModelEntry
from models.errors import ConfigError
from models.plugins import model_types, register_model_type

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


def register_loader(type_name: str, params: type[BaseModel], loader: Loader) -> None:
    """Register (or replace) the loader and parameter schema of a model type (from code; plugins
    use the `register_model_types` hook, `models.plugins`)."""
    register_model_type(type_name, params, loader)


def get_loader(type_name: str) -> Loader:
    spec = model_types().get(type_name)
    if spec is None:
        raise ConfigError("config", [f"unknown model type {type_name!r}; known: {', '.join(loader_types())}"])
    loader = spec.loader
    if isinstance(loader, str):  # "module:function", imported on first use
        module, _, attr = loader.partition(":")
        loader = getattr(importlib.import_module(module), attr)
    return loader


def loader_types() -> list[str]:
    return sorted(model_types())
