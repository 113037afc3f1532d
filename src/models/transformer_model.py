"""TransformerModel: the public front of every generation engine.

    model = TransformerModel(model_path="models/personality/luna_transformer", max_length=512,
                             temperature=0.8)
    text = model.generate(prompt="The character walked into the room", max_length=100)

`model_path` is anything `models.paths` understands (a folder, `builtin:<name>`, a store model
in the seed's `models/<category>/<name>` form, `openai:<id>`). Before weights load, the folder
is checked: pickles refused, every file's sha256 verified against `manifest.json` when the
folder has one (store and built-in models always do).

`max_length` is the most *new* tokens a call produces (what the seed's samples mean by it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from models.config import TransformerParams
from models.engines import create_engine
from models.engines.base import Candidate, Engine, GenerationStats, SamplingParams
from models.errors import GenerationInputError
from models.gate import checked_attribute, generating
from models.model_manager import resolve_path
from models.paths import PathRef, persona_base_ref
from models.registry import LoadRequest
from models.store import check_safe_files, verify_manifest

__all__ = ["TransformerModel"]


def _check_folder(ref: PathRef) -> None:
    if ref.folder is None or not ref.folder.is_dir():
        return

    check_safe_files(ref.folder)
    if (ref.folder / "manifest.json").exists():
        verify_manifest(ref.folder)


class TransformerModel:
    """A text generator over one engine (`fast`, `hf`, `openai`)."""

    def __init__(
        self,
        model_path: str | Path,
        max_length: int = 512,
        temperature: float = 0.8,
        top_p: float = 0.95,
        top_k: int = 50,
        repetition_penalty: float = 1.1,
        seed: int | None = None,
        engine: str = "auto",
        *,
        ref: PathRef | None = None,
        name: str | None = None,
        adapter: str | Path | None = None,
        **engine_options: Any,
    ) -> None:

        self.params = TransformerParams(
            max_length=max_length,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            seed=seed,
            engine=engine,
            **engine_options,
        )
        t0 = time.perf_counter()
        self.ref = ref or resolve_path(str(model_path))
        if self.ref.folder is not None and (self.ref.folder / "persona.json").exists():
            # A personality folder (e.g. the seed's `models/personality/luna_transformer`): its base model.
            base = persona_base_ref(self.ref.folder)
            if base is not None:
                self.ref = resolve_path(base, self.ref.folder)
        _check_folder(self.ref)
        self.adapter = Path(adapter) if adapter is not None else None
        self._engine: Engine = create_engine(self.ref, self.params, adapter=self.adapter)
        self.load_seconds = time.perf_counter() - t0
        self.model_path = str(model_path)
        self.name = name or self.ref.name or Path(str(model_path)).name

    # --- sampling settings -------------------------------------------------------------

    def sampling(self, max_length: int | None = None, **overrides: Any) -> SamplingParams:
        """The call's SamplingParams: the model's defaults with `overrides` applied."""
        p = self.params
        # A fixed seed makes every call reproducible (as Ollama's `seed` option does).
        seed = overrides.pop("seed", p.seed)
        stop = overrides.pop("stop", ())
        asked = frozenset(k for k in ("top_k", "min_p", "repetition_penalty") if k in overrides)
        params = SamplingParams(
            max_new_tokens=max_length if max_length is not None else p.max_length,
            temperature=overrides.pop("temperature", p.temperature),
            top_p=overrides.pop("top_p", p.top_p),
            top_k=overrides.pop("top_k", p.top_k),
            repetition_penalty=overrides.pop("repetition_penalty", p.repetition_penalty),
            seed=seed,
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            emotion=overrides.pop("emotion", None),
            logit_bias=overrides.pop("logit_bias", None),
            guide=overrides.pop("guide", None),
            presence_penalty=float(overrides.pop("presence_penalty", 0.0)),
            frequency_penalty=float(overrides.pop("frequency_penalty", 0.0)),
            min_p=float(overrides.pop("min_p", 0.0)),
            response_format=overrides.pop("response_format", None),
            logprobs=overrides.pop("logprobs", None),
            tools=tuple(overrides.pop("tools", None) or ()) or None,
            tool_choice=overrides.pop("tool_choice", None),
            continue_final=bool(overrides.pop("continue_final", False)),
            asked=asked,
        )
        if overrides:
            raise GenerationInputError(f"unknown generation option(s): {', '.join(sorted(overrides))}")
        return params

    # --- generation ----------------------------------------------------------------------

    @generating
    def generate(self, prompt: str, max_length: int | None = None, **overrides: Any) -> str:
        """The continuation of `prompt` (at most `max_length` new tokens)."""
        return "".join(self.stream(prompt, max_length, **overrides))

    @generating
    def stream(self, prompt: str, max_length: int | None = None, **overrides: Any) -> Iterator[str]:
        """Yield the continuation of `prompt` as text pieces while it decodes."""
        params = self.sampling(max_length, **overrides)
        return self._engine.stream(prompt, params)

    @generating
    def chat(self, messages: Sequence[dict[str, Any]], max_length: int | None = None, **overrides: Any) -> str:
        """The assistant's reply to OpenAI-style `messages`, through the model's chat template."""
        return "".join(self.stream_chat(messages, max_length, **overrides))

    @generating
    def stream_chat(
        self, messages: Sequence[dict[str, Any]], max_length: int | None = None, **overrides: Any
    ) -> Iterator[str]:
        params = self.sampling(max_length, **overrides)
        return self._engine.stream_chat(messages, params)

    @generating
    def generate_many(self, prompt: str, n: int, max_length: int | None = None, **overrides: Any) -> list[str]:
        """n sampled continuations of `prompt` (the `fast` engine decodes them together);
        with a `seed`, continuation i uses `derived_seed(seed, i)` (continuation 0 uses `seed`)."""
        params = self.sampling(max_length, **overrides)
        return [c.text for c in self._engine.sample_many(prompt, params, n)]

    @generating
    def chat_many(
        self, messages: Sequence[dict[str, Any]], n: int, max_length: int | None = None, **overrides: Any
    ) -> list[str]:
        """n sampled replies to `messages` (best-of-n candidates); seeds as `generate_many`."""
        return [c.text for c in self.chat_candidates(messages, n, max_length, **overrides)]

    @generating
    def chat_candidates(
        self, messages: Sequence[dict[str, Any]], n: int, max_length: int | None = None, **overrides: Any
    ) -> list[Candidate]:
        """`chat_many` with each candidate's token count, finish reason and, on local engines,
        the model's own log-likelihood of it (`Candidate.mean_logprob`), for ranking."""
        params = self.sampling(max_length, **overrides)
        return self._engine.sample_many(list(messages), params, n)

    @generating(monitored=False)
    def reply_logprobs(
        self, messages: Sequence[dict[str, Any]], replies: Sequence[tuple[str, bool]], **overrides: Any
    ) -> list[float | None]:
        """Mean log-probability per token of each `(text, ended)` reply as the answer to
        `messages` (local engines, `LocalEngine.reply_logprobs`; None each elsewhere)."""
        if not hasattr(self._engine, "reply_logprobs"):
            return [None] * len(replies)
        return self._engine.reply_logprobs(list(messages), self.sampling(None, **overrides), replies)

    @generating(monitored=False)
    def score(self, texts: str | Sequence[str]) -> list[float]:
        """Total log-likelihood (nats) of each text under the model."""
        return self._engine.score([texts] if isinstance(texts, str) else list(texts))

    def perplexity(self, text: str) -> float:
        import math

        n = max(1, self._engine.count_tokens(text))
        return math.exp(-self.score(text)[0] / n)

    # --- information -------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The engine itself: it generates without the model's gate, so handing it out needs
        `generate` on this model (checked unless already inside a checked call)."""
        checked_attribute(self, "engine")
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def codec(self) -> Any:
        """The engine's tokenizer and chat template (None for remote engines): reading, not generating."""
        return getattr(self._engine, "codec", None)

    @property
    def last_stats(self) -> GenerationStats:
        return self._engine.last_stats

    @property
    def engine_name(self) -> str:
        return self._engine.name

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.model_path,
            "resolved": str(self.ref.folder) if self.ref.folder else self.ref.raw,
            "version": self.ref.version,
            "load_seconds": round(self.load_seconds, 4),
            **self._engine.info(),
        }

    def close(self) -> None:
        self._engine.close()

    def __repr__(self) -> str:
        return f"TransformerModel({self.model_path!r}, engine={self.engine_name!r})"


def load_transformer(manager: Any, request: LoadRequest) -> TransformerModel:
    """Loader for `type: transformer` config entries."""
    p = request.params.model_dump()
    return TransformerModel(request.entry.path, ref=request.ref, name=request.name, **p)
