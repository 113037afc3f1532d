"""Generation engines behind `TransformerModel`: the built-in `fast`, `hf` and `openai`, and any
an installed plugin registers (`models.plugins`, hook `register_engines`).

`create_engine(ref, params)` with `engine: auto` asks each registered engine in priority order
whether it `supports` the path and takes the first that does: a `.gguf` file → `llamacpp`
(llama.cpp in process, `models.engines.llamacpp`); an OpenAI model id → `openai`; a
Llama-family folder the fast engine supports → `fast`; any other Hugging Face folder → `hf`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.errors import EngineError

if TYPE_CHECKING:
    from pathlib import Path

    from models.engines.base import Engine
    from models.paths import PathRef

__all__ = ["ENGINES", "create_engine", "engine_names"]

#: The built-in engines (plugins may add more: `engine_names()`).
ENGINES = ("llamacpp", "fast", "hf", "openai")


def engine_names() -> list[str]:
    """Every registered engine, built-in and from plugins, in the order `auto` asks them."""
    from models.plugins import engines

    return [e.name for e in engines()]


def create_engine(ref: PathRef, params: Any, adapter: Path | None = None) -> Engine:
    """Build the engine for a resolved model path and `TransformerParams`; `adapter` is a PEFT
    LoRA folder merged into the weights at load (local engines only)."""
    from models.plugins import engines

    registered = {e.name: e for e in engines()}
    choice = params.engine
    if choice == "auto":
        found = next((e for e in registered.values() if e.supports(ref, params)), None)
        if found is None:
            raise EngineError(f"no engine supports {ref.raw!r}; engines: {', '.join(registered)}")
        choice = found.name
    spec = registered.get(choice)
    if spec is None:
        raise EngineError(f"unknown engine {choice!r}; choose one of {', '.join(registered)}")
    return spec.factory(ref, params, adapter)
