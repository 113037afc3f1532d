"""`UserPreferences`: what one user has said they want, plus what the learner has found.

    prefs = UserPreferences.coerce({"tone": "warm", "length": "short", "formality": "casual"})
    prefs.targets()        # {"length": 0.12, "formality": 0.2, "sentiment": 0.75, ...}: feature ideals
    prefs.instructions()   # ["Keep replies short: one or two sentences.", ...]: for the prompt

Explicit settings are validated strictly: an unknown key or value raises `PreferenceError`
naming the field and the allowed values (with a "did you mean"), and nothing is stored.
`learned` holds the learner's profile summary (feature → ideal value), written back by the
personalization model; callers normally leave it alone.

Per-user persistence lives in the database (`user_preferences` table):
`save_preferences(user, prefs)` / `load_preferences(user)` / `delete_preferences(user)`.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.errors import DataError

__all__ = [
    "TONES",
    "PreferenceError",
    "UserPreferences",
    "delete_preferences",
    "load_preferences",
    "save_preferences",
    "update_preferences",
]

#: Tones a user can ask for; each maps to feature targets (sentiment, exclamations).
TONES: dict[str, dict[str, float]] = {
    "warm": {"sentiment": 0.8},
    "friendly": {"sentiment": 0.75},
    "gentle": {"sentiment": 0.7, "exclamation": 0.05},
    "encouraging": {"sentiment": 0.85},
    "romantic": {"sentiment": 0.8},
    "playful": {"sentiment": 0.75, "exclamation": 0.5},
    "enthusiastic": {"sentiment": 0.85, "exclamation": 0.6},
    "neutral": {"sentiment": 0.5, "exclamation": 0.05},
    "dry": {"sentiment": 0.5, "exclamation": 0.0},
    "understated": {"sentiment": 0.55, "exclamation": 0.0},
    "direct": {"exclamation": 0.0},
    "serious": {"sentiment": 0.5, "exclamation": 0.0},
}
_LENGTH = {"short": 0.12, "medium": 0.35, "long": 0.75}
_FORMALITY = {"casual": 0.2, "neutral": 0.5, "formal": 0.85}
_EMOJI = {"none": 0.0, "some": 0.5, "lots": 1.0}
_QUESTIONS = {"never": 0.0, "sometimes": 0.3, "often": 0.7}
_READING = {"simple": 0.25, "standard": 0.45, "advanced": 0.7}
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class PreferenceError(DataError):
    """Preferences that do not validate; `problems` holds one line per bad field."""

    def __init__(self, problems: list[str], source: str = "user_preferences") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source}: " + "; ".join(problems))


class UserPreferences(BaseModel):
    """Explicit settings (all optional) and learned weights of one user."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    length: Literal["short", "medium", "long"] | None = Field(None, description="Reply length.")
    formality: Literal["casual", "neutral", "formal"] | None = Field(None, description="Register.")
    tone: list[str] = Field(default_factory=list, description="One or more of TONES (a comma string works).")
    emoji: Literal["none", "some", "lots"] | None = Field(None, description="Emoji use (true = some, false = none).")
    questions: Literal["never", "sometimes", "often"] | None = Field(None, description="Follow-up questions.")
    reading_level: Literal["simple", "standard", "advanced"] | None = Field(None, description="Word and sentence size.")
    genres: list[str] = Field(default_factory=list, description="Genres the user writes or reads.")
    topics_to_avoid: list[str] = Field(default_factory=list, description="Topics the companion must not raise.")
    name: str | None = Field(None, max_length=100, description="How to call the user.")
    pronouns: str | None = Field(None, max_length=40, description="e.g. she/her, they/them.")
    language: str = Field("en", description="BCP 47 language tag of replies.")
    learned: dict[str, float] = Field(default_factory=dict, description="The learner's profile (feature → ideal).")

    @field_validator("tone", mode="before")
    @classmethod
    def _tone(cls, v: Any) -> list[str]:
        if v is None:
            return []
        items = [t.strip().lower() for t in v.split(",")] if isinstance(v, str) else v
        if not isinstance(items, list | tuple):
            raise ValueError("expected a tone name, a comma-separated string or a list")
        out = []
        for t in items:
            if not isinstance(t, str) or t.strip().lower() not in TONES:
                close = difflib.get_close_matches(str(t), list(TONES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown tone {t!r}{hint}; known: {', '.join(TONES)}")
            if t.strip().lower() not in out:
                out.append(t.strip().lower())
        return out

    @field_validator("emoji", mode="before")
    @classmethod
    def _emoji(cls, v: Any) -> Any:
        if isinstance(v, bool):
            return "some" if v else "none"
        return v

    @field_validator("genres", "topics_to_avoid", mode="before")
    @classmethod
    def _words(cls, v: Any) -> list[str]:
        if v is None:
            return []
        items = [t for t in v.split(",")] if isinstance(v, str) else v
        if not isinstance(items, list | tuple) or not all(isinstance(t, str) for t in items):
            raise ValueError("expected a list of strings")
        return [t.strip() for t in items if t.strip()]

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        if not _LANG.match(v):
            raise ValueError("expected a BCP 47 tag such as 'en' or 'pt-BR'")
        return v

    @field_validator("learned")
    @classmethod
    def _learned(cls, v: dict[str, float]) -> dict[str, float]:
        from models.personalization.features import SCALAR_FEATURES

        for key, value in v.items():
            if key not in SCALAR_FEATURES:
                raise ValueError(f"unknown feature {key!r}; known: {', '.join(SCALAR_FEATURES)}")
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key}: {value} is outside [0, 1]")
        return v

    # --- construction ----------------------------------------------------------------------

    @classmethod
    def coerce(
        cls, value: UserPreferences | dict[str, Any] | None, source: str = "user_preferences"
    ) -> UserPreferences:
        """A `UserPreferences` from itself, a dict, or None (no preferences); errors name the field."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if not isinstance(value, dict):
            raise PreferenceError([f"expected a dict or UserPreferences, got {type(value).__name__}"], source)
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise PreferenceError(_problems(exc), source) from None

    @classmethod
    def from_file(cls, path: str | Path) -> UserPreferences:
        """Read `preferences.json` (ours) or the sample `companion-user-preferences/1` format."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise PreferenceError(["file not found"], str(path)) from None
        except json.JSONDecodeError as exc:
            raise PreferenceError([f"not JSON: {exc.msg} (line {exc.lineno})"], str(path)) from None
        if not isinstance(data, dict):
            raise PreferenceError(["expected a JSON object"], str(path))
        if data.get("format") == "companion-user-preferences/1":
            data = _from_sample_format(data)
        data = {k: v for k, v in data.items() if k not in ("format", "version")}
        return cls.coerce(data, str(path))

    def merged(self, other: UserPreferences | dict[str, Any] | None) -> UserPreferences:
        """These preferences with `other`'s explicitly set fields on top."""
        if other is None:
            return self
        over = UserPreferences.coerce(other)
        return UserPreferences.model_validate({**self.model_dump(), **over.model_dump(exclude_unset=True)})

    # --- what they mean --------------------------------------------------------------------

    def targets(self) -> dict[str, float]:
        """Ideal feature values (see `features.SCALAR_FEATURES`) the explicit settings imply."""
        out: dict[str, float] = {}
        if self.length:
            out["length"] = _LENGTH[self.length]
        if self.formality:
            out["formality"] = _FORMALITY[self.formality]
        if self.emoji:
            out["emoji"] = _EMOJI[self.emoji]
        if self.questions:
            out["questions"] = _QUESTIONS[self.questions]
        if self.reading_level:
            out["reading_level"] = _READING[self.reading_level]
        if self.tone:
            sums: dict[str, list[float]] = {}
            for t in self.tone:
                for k, v in TONES[t].items():
                    sums.setdefault(k, []).append(v)
            out.update({k: sum(v) / len(v) for k, v in sums.items()})
        return out

    def instructions(self) -> list[str]:
        """Plain-language instructions for the prompt (instruction-following models use them)."""
        lines = []
        if self.length == "short":
            lines.append("Keep replies short: one or two sentences.")
        elif self.length == "long":
            lines.append("Give full, detailed replies.")
        if self.formality == "casual":
            lines.append("Use a casual, relaxed register.")
        elif self.formality == "formal":
            lines.append("Use a formal register, without contractions or slang.")
        if self.tone:
            lines.append(f"Tone: {', '.join(self.tone)}.")
        if self.emoji == "none":
            lines.append("Do not use emoji.")
        elif self.emoji in ("some", "lots"):
            lines.append("Feel free to use emoji.")
        if self.questions == "never":
            lines.append("Do not ask questions back.")
        elif self.questions == "often":
            lines.append("End with a question.")
        if self.reading_level == "simple":
            lines.append("Use simple words and short sentences.")
        if self.topics_to_avoid:
            lines.append(f"Never bring up: {', '.join(self.topics_to_avoid)}.")
        if self.name:
            lines.append(f"The user's name is {self.name}" + (f" ({self.pronouns})." if self.pronouns else "."))
        if self.genres:
            lines.append(f"They like {', '.join(self.genres)}.")
        if self.language != "en":
            lines.append(f"Reply in the language with tag {self.language}.")
        return lines

    def explicit(self) -> dict[str, Any]:
        """The explicit settings only (no `learned`), without empty values."""
        data = self.model_dump(exclude={"learned"})
        return {k: v for k, v in data.items() if v not in (None, [], "") and not (k == "language" and v == "en")}


def _problems(exc: ValidationError) -> list[str]:
    out = []
    fields = list(UserPreferences.model_fields)
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            out.append(f"{loc}: unknown preference{hint}; known: {', '.join(f for f in fields if f != 'learned')}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{loc}: {msg} (got {err.get('input')!r})")
    return out


def _from_sample_format(data: dict[str, Any]) -> dict[str, Any]:
    """The shipped sample format (`training_data/user_data/preferences.json`) → our fields."""
    out: dict[str, Any] = {}
    if "preferred_genres" in data:
        out["genres"] = data["preferred_genres"]
    if isinstance(data.get("tone"), str):
        out["tone"] = [t.strip() for t in data["tone"].split(",") if t.strip().lower() in TONES]
    style = str(data.get("feedback_style", "")).lower()
    if "direct" in style and "direct" not in out.get("tone", []):
        out.setdefault("tone", []).append("direct")
    if "one suggestion" in style or "short" in style:
        out["length"] = "short"
    return out


# --- persistence (the database) ---------------------------------------------------------------


def save_preferences(user: str, prefs: UserPreferences | dict[str, Any]) -> UserPreferences:
    """Validate and store `user`'s preferences (one transaction); returns what was stored."""
    from models.personalization import storage

    valid = UserPreferences.coerce(prefs)
    storage.put_preferences(user, valid.model_dump(exclude_defaults=True))
    return valid


def update_preferences(user: str, change: Callable[[UserPreferences], UserPreferences]) -> UserPreferences:
    """Apply `change` to `user`'s stored preferences (defaults if none) and store the result, in
    one transaction holding the user's row: concurrent updates all land (read-merge-write outside
    a transaction lost all but one). A `change` that raises, or a result that does not validate,
    stores nothing."""
    from models.personalization import storage

    result: list[UserPreferences] = []

    def apply(current: dict[str, Any] | None) -> dict[str, Any]:
        prefs = UserPreferences.coerce(current, f"user_preferences[{user!r}]") if current else UserPreferences()
        new = UserPreferences.coerce(change(prefs))
        result.append(new)
        return new.model_dump(exclude_defaults=True)

    storage.update_preferences(user, apply)
    return result[-1]


def load_preferences(user: str) -> UserPreferences | None:
    """`user`'s stored preferences, or None."""
    from models.personalization import storage

    data = storage.get_preferences(user)
    return None if data is None else UserPreferences.coerce(data, f"user_preferences[{user!r}]")


def delete_preferences(user: str) -> bool:
    from models.personalization import storage

    return storage.delete_preferences(user)
