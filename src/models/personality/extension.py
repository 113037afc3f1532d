"""Our fields on a card: `data.extensions.companion` (typed, validated, defaults filled).

    "extensions": {"companion": {
        "emotion":     {"labels": [...], "baseline": {"joy": 0.4, "romantic": 0.3}, "decay": 0.25, ...},
        "behavior":    {"verbosity": 0.6, "initiative": 0.7, "humour": 0.4, "formality": 0.2,
                        "boundaries": ["medical advice"]},
        "interaction": {"user_name": "friend", "address_user_as": "dear writer", "history_turns": 8},
        "scenarios":   {"romantic_conversation": {"scenario": "...", "emotion": "romantic"}},
        "voice":       {"model": "en_US-lessac-medium", "speed": 1.05, "emotion_speed": true},
        "default_context": null
    }}

Everything is optional; other apps ignore the key, and other keys under `extensions` are kept
untouched. The namespaced key `companion/emotion_default` (a single label) is honoured as the
baseline when `emotion.baseline` is absent.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from models.errors import CardError
from models.tokens import EMOTIONS

__all__ = [
    "BehaviorTraits",
    "CompanionExtension",
    "EmotionSettings",
    "InteractionSettings",
    "Scenario",
    "VoiceSettings",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EmotionSettings(_Model):
    """The character's emotional model."""

    labels: list[str] = Field(default_factory=lambda: list(EMOTIONS), description="Emotion labels of this character.")
    label_map: dict[str, list[str]] = Field(
        default_factory=dict, description="Custom label → the classifier labels whose probabilities it sums."
    )
    baseline: dict[str, float] | str | None = Field(
        None, description="Temperament: where the state decays to (a label, or label → weight)."
    )
    decay: float = Field(0.25, ge=0.0, le=1.0, description="Share of the way back to the baseline per turn.")
    sensitivity: float = Field(0.6, ge=0.0, le=1.0, description="How far one user message can move the state.")
    reactions: dict[str, dict[str, float]] = Field(
        default_factory=dict, description="Detected user emotion → the character's response emotions."
    )
    expressions: dict[str, str] = Field(
        default_factory=dict, description="Label → how the character sounds in it (prompt-based control)."
    )

    @model_validator(mode="after")
    def _labels_known(self) -> EmotionSettings:
        if len(set(self.labels)) != len(self.labels) or not self.labels:
            raise ValueError("labels must be a non-empty list without repeats")
        known = set(self.labels)
        base = self.baseline
        names = [base] if isinstance(base, str) else list(base or {})
        for name in names + [t for r in self.reactions.values() for t in r]:
            if name not in known:
                raise ValueError(f"{name!r} is not one of this character's labels ({', '.join(self.labels)})")
        return self


class BehaviorTraits(_Model):
    """Behaviour traits in [0, 1] (0.5 = neutral) and hard boundaries."""

    verbosity: float = Field(0.5, ge=0.0, le=1.0, description="0 terse … 1 expansive (reply length).")
    initiative: float = Field(0.5, ge=0.0, le=1.0, description="0 answers only … 1 leads (question rate).")
    humour: float = Field(0.3, ge=0.0, le=1.0, description="0 earnest … 1 joking (also sampling temperature).")
    formality: float = Field(0.4, ge=0.0, le=1.0, description="0 casual … 1 formal.")
    boundaries: list[str] = Field(default_factory=list, description="Topics the character declines.")


class InteractionSettings(_Model):
    """How the character talks with the user."""

    user_name: str = Field("friend", description="`{{user}}` when the caller names no user.")
    address_user_as: str | None = Field(None, description="A fixed form of address, e.g. 'dear writer'.")
    history_turns: int = Field(12, ge=0, le=1000, description="Most past messages kept in the prompt.")
    example_dialogue: str = Field("auto", description="auto (while room) | always | never.")
    greeting: str = Field("first", description="first | random: which greeting opens a chat.")

    @field_validator("example_dialogue")
    @classmethod
    def _examples(cls, v: str) -> str:
        if v not in ("auto", "always", "never"):
            raise ValueError("must be auto, always or never")
        return v

    @field_validator("greeting")
    @classmethod
    def _greeting(cls, v: str) -> str:
        if v not in ("first", "random"):
            raise ValueError("must be first or random")
        return v


class Scenario(_Model):
    """A `context=` key: the situation the conversation happens in."""

    scenario: str = Field(..., description="Replaces the card's scenario for this context.")
    description: str = Field("", description="Shown in lists; not put into prompts.")
    emotion: str | None = Field(None, description="The mood this context starts in.")
    instructions: str = Field("", description="Extra instructions for the character in this context.")
    first_mes: str | None = Field(None, description="A greeting for this context.")


class VoiceSettings(_Model):
    """How the character sounds when a reply is spoken (`models.speech`, Piper)."""

    model: str | None = Field(
        None, description="An installed Piper voice (`companion voices list`); none: the caller's or the only one."
    )
    speaker: int | None = Field(None, ge=0, description="Speaker of a multi-speaker voice.")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="1 is the voice's own pace; 1.2 is 20% faster.")
    emotion_speed: bool = Field(True, description="Speak faster when glad or afraid, slower when sad or tender.")


class CompanionExtension(_Model):
    """`data.extensions.companion`."""

    emotion: EmotionSettings = Field(default_factory=EmotionSettings)
    behavior: BehaviorTraits = Field(default_factory=BehaviorTraits)
    interaction: InteractionSettings = Field(default_factory=InteractionSettings)
    scenarios: dict[str, Scenario] = Field(default_factory=dict)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    default_context: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> CompanionExtension:
        for key, sc in self.scenarios.items():
            if sc.emotion is not None and sc.emotion not in self.emotion.labels:
                raise ValueError(f"scenarios.{key}.emotion {sc.emotion!r} is not one of the character's labels")
        if self.default_context is not None and self.default_context not in self.scenarios:
            raise ValueError(f"default_context {self.default_context!r} is not a scenario key")
        return self

    def baseline(self) -> dict[str, float]:
        """The temperament as label → weight (normalised; neutral when nothing is set)."""
        base = self.emotion.baseline
        labels = self.emotion.labels
        if isinstance(base, str):
            weights = {base: 1.0}
        elif base:
            weights = {k: max(0.0, float(v)) for k, v in base.items()}
        else:
            weights = {"neutral" if "neutral" in labels else labels[0]: 1.0}
        total = sum(weights.values()) or 1.0
        return {k: weights.get(k, 0.0) / total for k in labels}

    @classmethod
    def from_card_extensions(cls, extensions: dict[str, Any], source: str | None = None) -> CompanionExtension:
        """Parse `extensions["companion"]` (CardError naming the field when it is invalid)."""
        data = extensions.get("companion") or {}
        if not isinstance(data, dict):
            raise CardError("data.extensions.companion", f"expected an object, got {type(data).__name__}", source)
        legacy = extensions.get("companion/emotion_default")
        if isinstance(legacy, str) and "baseline" not in (data.get("emotion") or {}):
            labels = (data.get("emotion") or {}).get("labels") or list(EMOTIONS)
            if legacy in labels:
                data = {**data, "emotion": {**(data.get("emotion") or {}), "baseline": legacy}}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            field = "data.extensions.companion" + (f".{loc}" if loc else "")
            raise CardError(field, err["msg"].removeprefix("Value error, "), source) from None
