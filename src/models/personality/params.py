"""`parameters:` of `type: personality` config entries (light: no torch, no numpy).

    models:
      personality:
        luna:
          type: personality
          path: "builtin:luna"           # a folder with persona.json (+ companion.json, adapter/)
          parameters:
            max_length: 120              # most new tokens per reply (verbosity scales below it)
            temperature: 0.8
            base_model: null             # override the folder's base model (a path or CATEGORY/NAME)
            emotion_control: auto        # auto | token | prompt | none
            emotion_steering: 1.0        # steer decoding toward the emotion (0 = off; local
            steering_margin: 4.0         # engines): strength, and how far below the best
                                         # logit a token may be and still be nudged
            emotion_rerank: null         # candidates per reply (best-of-N), ranked by emotion
                                         # fit, behaviour and the model's own likelihood;
                                         # null = 8 on small local models, else 1
            fluency_weight: 1.0          # weight of that likelihood (mean nats per token)
            specificity: null            # weight of how much likelier a candidate is after
                                         # this conversation than after an empty message
                                         # (null = 1.0 on small local models, else 0)
            card_focus: null             # lean word choice toward the card's facts (nats;
                                         # null = 2.0 on small local models, else 0)
            trim_incomplete: false       # cut a reply back to its last whole sentence
                                         # (SillyTavern's "Trim Incomplete Sentences")

Every `transformer` parameter applies to the base model's generation.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from models.config import TransformerParams

__all__ = ["PersonalityParams"]


class PersonalityParams(TransformerParams):
    """Parameters of `type: personality`."""

    max_length: int = Field(120, ge=1, le=1_000_000, description="Most new tokens per reply.")
    base_model: str | None = Field(
        None, description="Base model: a path (builtin:, openai:, a folder) or CATEGORY/NAME in the config."
    )
    user_name: str | None = Field(None, description="`{{user}}` when the caller names no user.")
    history_turns: int | None = Field(None, ge=0, le=1000, description="Most past messages in the prompt.")
    context_tokens: int | None = Field(None, ge=64, description="Prompt budget (default: the model's context).")
    emotion_control: str = Field("auto", description="auto | token | prompt | none")
    emotion_steering: float = Field(
        1.0, ge=0, le=20, description="Strength of emotion steering while decoding (0 = off; local engines)."
    )
    steering_margin: float = Field(
        4.0, gt=0, le=50, description="Steer only tokens within this many nats of the most likely one."
    )
    emotion_rerank: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Candidates per reply, ranked by emotion fit, behaviour and likelihood (null: 8 on small "
        "local models, else 1).",
    )
    fluency_weight: float = Field(
        1.0, ge=0, le=20, description="Weight of a candidate's mean log-likelihood per token in the ranking."
    )
    specificity: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Weight, in the best-of-N ranking, of how much likelier a candidate is after this conversation "
        "than after an empty message (null: 1.0 on small local models, else 0).",
    )
    card_focus: float | None = Field(
        None,
        ge=0,
        le=10,
        description="Lean word choice toward the card's facts, in nats (null: 2.0 on small local models, else 0).",
    )
    trim_incomplete: bool = Field(
        False,
        description="Cut each reply back to the end of its last whole sentence, as SillyTavern's "
        "'Trim Incomplete Sentences' does (a stream shows the untrimmed text; the kept turn is trimmed).",
    )
    classifier: str | None = Field(None, description="Emotion classifier folder (default: the built-in one).")

    @field_validator("emotion_control")
    @classmethod
    def _control(cls, v: str) -> str:
        if v not in ("auto", "token", "prompt", "none"):
            raise ValueError("must be auto, token, prompt or none")
        return v
