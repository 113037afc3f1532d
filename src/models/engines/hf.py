"""The `hf` engine: any causal LM that `transformers` can load from a local folder.

Weights load from safetensors only (`use_safetensors=True`); the store has already refused
pickles and verified hashes before we get here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from models.engines.base import LocalEngine
from models.engines.codec import TextCodec
from models.errors import EngineError

__all__ = ["HFEngine"]


def _auto_dtype(folder: Path) -> torch.dtype:
    """bfloat16 for weights stored in bfloat16, float32 otherwise (float16 matmuls are slow or
    missing on CPUs)."""
    from models.engines.llama.weights import TensorFiles

    try:
        stored = TensorFiles(folder).stored_dtype()
    except EngineError:
        return torch.float32
    return torch.bfloat16 if stored == torch.bfloat16 else torch.float32


class HFEngine(LocalEngine):
    name = "hf"

    def __init__(
        self,
        folder: str | Path,
        dtype: torch.dtype | None = torch.float32,
        model: Any = None,
        adapter: str | Path | None = None,
    ) -> None:
        folder = Path(folder)
        if model is None:
            from transformers import AutoModelForCausalLM

            try:
                model = AutoModelForCausalLM.from_pretrained(
                    str(folder),
                    dtype=_auto_dtype(folder) if dtype is None else dtype,
                    use_safetensors=True,
                    local_files_only=True,
                )
            except (OSError, ValueError) as exc:
                raise EngineError(f"{folder}: transformers could not load the model ({exc})") from exc
        model.eval()
        self.adapter = None
        if adapter is not None:
            self.adapter = {"path": str(adapter), **_merge_into(model, Path(adapter))}
        self.model = model
        self.folder = folder
        cfg = model.config
        max_pos = getattr(cfg, "max_position_embeddings", None) or 2048
        super().__init__(TextCodec(folder), max_positions=int(max_pos))
        self._cache: Any = None
        self._pos = 0
        import inspect

        # transformers 5.x renamed `past_key_values` to `cache`; accept both.
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @torch.inference_mode()
    def prefill(self, ids: list[int]) -> torch.Tensor:
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self.model.config)
        x = torch.tensor([ids])
        out = self.model(input_ids=x, use_cache=True, logits_to_keep=1, **{self._cache_kw: self._cache})
        self._pos = len(ids)
        return out.logits[0, -1]

    @torch.inference_mode()
    def step(self, token: int) -> torch.Tensor:
        x = torch.tensor([[token]])
        out = self.model(input_ids=x, use_cache=True, **{self._cache_kw: self._cache})
        self._pos += 1
        return out.logits[0, -1]

    @torch.inference_mode()
    def forward_full(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits

    def info(self) -> dict[str, Any]:
        n = sum(p.numel() for p in self.model.parameters())
        extra = {"architecture": type(self.model).__name__, "parameters": n}
        return super().info() | extra | ({"adapter": self.adapter} if self.adapter else {})


@torch.no_grad()
def _merge_into(model: Any, adapter: Path) -> dict[str, Any]:
    """Fold a PEFT LoRA adapter into the loaded model's weights, in place."""
    from models.adapters import merge_lora

    params = dict(model.named_parameters())
    tensors = {name: p.data for name, p in params.items()}
    summary = merge_lora(tensors, adapter)
    for name, t in tensors.items():
        if t is not params[name].data:
            params[name].data.copy_(t)
    return summary
