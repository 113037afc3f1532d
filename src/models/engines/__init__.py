"""Generation engines behind `TransformerModel`: `fast`, `hf`, `openai`.

`create_engine(ref, params)` picks one from what the path holds when `engine: auto`:
an OpenAI model id → `openai`; a Llama-family folder that the fast engine supports → `fast`;
any other Hugging Face folder → `hf`. A `.gguf` file is refused with a clear error until a
llama.cpp engine exists (serve it with llama.cpp's own OpenAI-compatible server meanwhile).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.errors import EngineError

if TYPE_CHECKING:
    from pathlib import Path

    from models.engines.base import Engine
    from models.paths import PathRef

__all__ = ["ENGINES", "create_engine"]

ENGINES = ("fast", "hf", "openai")


def _dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _fast_supported(folder: Any) -> bool:
    try:
        from models.engines.fast import FastEngine
    except ImportError:
        return False
    return FastEngine.supports(folder)


def create_engine(ref: PathRef, params: Any, adapter: Path | None = None) -> Engine:
    """Build the engine for a resolved model path and `TransformerParams`; `adapter` is a PEFT
    LoRA folder merged into the weights at load (local engines only)."""
    choice = params.engine
    if choice == "auto":
        if ref.kind == "openai" or params.base_url:
            choice = "openai"
        elif ref.kind == "gguf":
            raise EngineError(
                f"{ref.raw}: GGUF files have no engine here yet; serve it with llama.cpp's server "
                "(llama-server -m FILE) and use path openai:<id> with base_url http://localhost:8080/v1"
            )
        elif ref.folder is not None and _fast_supported(ref.folder):
            choice = "fast"
        else:
            choice = "hf"
    if choice == "openai":
        from models.engines.openai import OpenAIEngine

        model = params.model or ref.remote_model
        if not model:
            raise EngineError("the openai engine needs a model id: set `parameters.model` or use path openai:<id>")
        kwargs: dict[str, Any] = {"model": model}
        if params.base_url:
            kwargs["base_url"] = params.base_url
        if params.api_key_env:
            kwargs["api_key_env"] = params.api_key_env
        return OpenAIEngine(**kwargs)
    if ref.folder is None:
        raise EngineError(f"engine {choice!r} needs a local model folder, got {ref.raw!r}")
    if adapter is not None and choice not in ("fast", "hf"):
        raise EngineError(f"a LoRA adapter ({adapter}) needs a local engine (fast or hf), not {choice!r}")
    if choice == "fast":
        from models.engines.fast import FastEngine

        return FastEngine(ref.folder, dtype=_dtype(params.dtype), threads=params.threads, adapter=adapter)
    if choice == "hf":
        from models.engines.hf import HFEngine

        if params.threads:
            import torch

            torch.set_num_threads(params.threads)
        return HFEngine(ref.folder, dtype=_dtype(params.dtype), adapter=adapter)
    raise EngineError(f"unknown engine {choice!r}; choose one of {', '.join(ENGINES)}")
