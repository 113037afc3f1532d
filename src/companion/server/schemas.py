"""Request and response bodies (pydantic): what `/openapi.json` documents.

Requests accept unknown fields (OpenAI clients send `presence_penalty`, `stream_options`, ...):
they are ignored, never an error. `logit_bias` is honoured, as OpenAI defines it. Values are checked here, at the edge.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompanionOptions",
    "CompletionRequest",
    "FeedbackRequest",
    "MemoryFact",
    "MemoryFactIn",
    "PreferencesIn",
    "RollbackRequest",
]

Stop = str | list[str] | None


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1, max_length=200, description="A model id from GET /v1/models.")
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens (the server's limit applies).")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, ge=0.0, le=1.0, description="0 is greedy (as OpenAI takes it).")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="OpenAI's presence penalty.")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="OpenAI's frequency penalty.")
    top_k: int | None = Field(None, ge=0, le=100_000, description="Sample among the k most likely tokens (0: all).")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="Drop tokens under this share of the best one.")
    repetition_penalty: float | None = Field(
        None, gt=0.0, le=10.0, description="Divide the logits of tokens already seen (1: off), as transformers does."
    )
    stop: Stop = Field(None, description="Up to 4 sequences that end the reply.")
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    logit_bias: dict[str, float] | None = Field(
        None, description="Token id (as a string) → a value in [-100, 100] added to its logit before sampling."
    )
    n: int = Field(1, ge=1, description="How many choices (the server's limit applies).")
    stream: bool = False
    user: str | None = Field(
        None, max_length=200, description="The name the character calls the user ({{user}}); not an identity."
    )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class CompanionOptions(BaseModel):
    """Our extension of a chat request (`extra_body={"companion": {...}}` in OpenAI's client);
    it applies to card-mode requests (only user and assistant turns)."""

    model_config = ConfigDict(extra="forbid")

    emotion: str | None = Field(
        None, max_length=64, description="Answer in this emotional state (one of the character's labels)."
    )
    context: str | None = Field(
        None, max_length=64, description="A scenario key the character's card defines (e.g. romantic_conversation)."
    )
    prompt: Literal["auto", "card", "client"] = Field(
        "auto",
        description="Which prompt answers: the character's own (card; the client's system messages are left out), "
        "the client's messages (client), or auto: card when the request has only user and assistant turns.",
    )


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(..., min_length=1)
    companion: CompanionOptions | None = Field(None, description="Emotion and scenario for the card-driven prompt.")


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(..., description="Text to continue (a list: one completion per text).")
    echo: bool = False


class FeedbackRequest(BaseModel):
    response_id: str = Field(..., min_length=1, max_length=64, description="`response_id` of an answer.")
    rating: float | None = Field(None, description="+1/-1 (thumbs) or 1-5 with stars=true.")
    stars: bool = False
    choice: int | None = Field(None, ge=0, le=64)
    regenerate: bool = False
    edited_text: str | None = Field(None, max_length=20000)
    comment: str | None = Field(None, max_length=2000)


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    preferences: dict[str, Any] = Field(..., description="Stated preferences to merge (null clears one).")


class MemoryFactIn(BaseModel):
    text: str = Field(..., min_length=1, max_length=1000)
    kind: str = Field("fact", max_length=32)


class MemoryFact(BaseModel):
    id: int
    kind: str
    text: str
    source: str | None = None


class RollbackRequest(BaseModel):
    version: str | None = Field(None, max_length=64, description="Target version (default: the previous one).")
    alias: str = Field("current", max_length=64)
    reason: str | None = Field(None, max_length=500)
