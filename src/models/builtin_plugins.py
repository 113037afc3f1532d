"""The built-in model types and engines, registered through the same hooks as any plugin.

Loaders are "module:function" strings, imported on first use, so validating a config never
imports torch; parameter schemas come from light modules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.hookspecs import hookimpl


@hookimpl
def register_model_types(register: Any) -> None:
    from models.config import TransformerParams
    from models.personality.params import PersonalityParams
    from models.personalization.params import HybridParams, PersonalizationParams

    register("transformer", TransformerParams, "models.transformer_model:load_transformer")
    register("personality", PersonalityParams, "models.personality.loader:load_personality")
    register("personalization", PersonalizationParams, "models.personalization.model:load_personalization")
    register("adaptive", PersonalizationParams, "models.adaptive_model:load_adaptive")
    register("hybrid", HybridParams, "models.hybrid_model:load_hybrid")


def _dtype(name: str) -> Any:
    import torch

    return {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _local_folder(ref: Any, name: str) -> Path:
    from models.errors import EngineError

    if ref.folder is None:
        raise EngineError(f"engine {name!r} needs a local model folder, got {ref.raw!r}")
    return ref.folder


def _openai(ref: Any, params: Any, adapter: Path | None) -> Any:
    from models.engines.openai import OpenAIEngine
    from models.errors import EngineError

    if adapter is not None:
        raise EngineError(f"a LoRA adapter ({adapter}) needs a local engine (fast or hf), not 'openai'")
    model = params.model or ref.remote_model
    if not model:
        raise EngineError("the openai engine needs a model id: set `parameters.model` or use path openai:<id>")
    kwargs: dict[str, Any] = {"model": model}
    if params.base_url:
        kwargs["base_url"] = params.base_url
    if params.api_key_env:
        kwargs["api_key_env"] = params.api_key_env
    return OpenAIEngine(**kwargs)


def _fast(ref: Any, params: Any, adapter: Path | None) -> Any:
    from models.engines.llama import FastEngine

    folder = _local_folder(ref, "fast")
    return FastEngine(
        folder, dtype=_dtype(params.dtype), threads=params.threads, adapter=adapter, threads_batch=params.threads_batch
    )


def _fast_supports(ref: Any, params: Any) -> bool:
    if ref.folder is None:
        return False
    try:
        from models.engines.llama import FastEngine
    except ImportError:
        return False
    return bool(FastEngine.supports(ref.folder))


def _hf(ref: Any, params: Any, adapter: Path | None) -> Any:
    from models.engines.hf import HFEngine

    folder = _local_folder(ref, "hf")
    if params.threads:
        import torch

        torch.set_num_threads(params.threads)
    return HFEngine(folder, dtype=_dtype(params.dtype), adapter=adapter)


def _llamacpp(ref: Any, params: Any, adapter: Path | None) -> Any:
    from models.engines.llamacpp import LlamaCppEngine

    if ref.kind != "gguf" or ref.folder is None:
        from models.errors import EngineError

        raise EngineError(f"{ref.raw}: the llamacpp engine runs .gguf files")
    return LlamaCppEngine(ref.folder, threads=params.threads, adapter=adapter, threads_batch=params.threads_batch)


@hookimpl
def register_engines(register: Any) -> None:
    register("llamacpp", _llamacpp, supports=lambda ref, params: ref.kind == "gguf" and not params.base_url, priority=8)
    register("openai", _openai, supports=lambda ref, params: ref.kind == "openai" or bool(params.base_url), priority=10)
    register("fast", _fast, supports=_fast_supports, priority=20)
    register("hf", _hf, supports=lambda ref, params: ref.kind in ("folder", "builtin", "store"), priority=90)
