"""`Response`: a personality's reply, a `str` that also carries emotion, model and timings."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["Response", "timings", "usage"]


class Response(str):
    """The reply text (it *is* the string) plus what produced it.

    Attributes: `text`, `emotion` (the state the reply was generated in), `detected_emotion`
    (what the classifier reads in the reply), `character`, `model` (config name), `version`,
    `base_model`, `context`, `timings` (`prompt_ms`, `generate_ms`, `total_ms`,
    `first_token_ms`), `usage` (`prompt_tokens`, `completion_tokens`, `tokens_per_s`) and
    `prompt` (what was kept and dropped to fit the context).
    """

    text: str
    emotion: str | None
    detected_emotion: str | None
    character: str
    model: str
    version: str | None
    base_model: str
    context: str | None
    timings: dict[str, float]
    usage: dict[str, Any]
    prompt: dict[str, Any]

    def __new__(cls, text: str, **meta: Any) -> Response:
        obj = super().__new__(cls, text)
        obj.text = text
        obj.emotion = meta.get("emotion")
        obj.detected_emotion = meta.get("detected_emotion")
        obj.character = meta.get("character", "")
        obj.model = meta.get("model", "")
        obj.version = meta.get("version")
        obj.base_model = meta.get("base_model", "")
        obj.context = meta.get("context")
        obj.timings = dict(meta.get("timings") or {})
        obj.usage = dict(meta.get("usage") or {})
        obj.prompt = dict(meta.get("prompt") or {})
        return obj

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data."""
        return {
            "text": self.text,
            "emotion": self.emotion,
            "detected_emotion": self.detected_emotion,
            "character": self.character,
            "model": self.model,
            "version": self.version,
            "base_model": self.base_model,
            "context": self.context,
            "timings": self.timings,
            "usage": self.usage,
            "prompt": self.prompt,
        }

    def __repr__(self) -> str:
        return f"Response({self.text!r}, emotion={self.emotion!r}, model={self.model!r}, version={self.version!r})"


def timings(t0: float, prompt_s: float, generated_at: float, stats: Any) -> dict[str, float | None]:
    """`Response.timings` of a turn that started at `t0` (`time.perf_counter`), spent `prompt_s`
    building its prompt and had its text at `generated_at`; the first token's time from the
    engine's `GenerationStats` (None where the engine gave none)."""
    ttft = getattr(stats, "time_to_first_token_s", None)
    return {
        "prompt_ms": round(prompt_s * 1000, 3),
        "generate_ms": round((generated_at - t0 - prompt_s) * 1000, 3),
        "total_ms": round((time.perf_counter() - t0) * 1000, 3),
        "first_token_ms": round(ttft * 1000, 3) if ttft is not None else None,
    }


def usage(stats: Any) -> dict[str, Any]:
    """`Response.usage` from the engine's `GenerationStats` (None each where it gave none)."""
    return {key: getattr(stats, key, None) for key in ("prompt_tokens", "completion_tokens", "tokens_per_s")}
