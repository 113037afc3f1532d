"""Personalization models: what one user likes, learned from feedback, applied to responses.

    from models.personalization import load_personalization_model

    personalization_model = load_personalization_model("user_preferences")
    adapted_response = personalization_model.adapt_response(
        base_response="Hello, how can I help you?", user_preferences={"tone": "warm", "length": "short"}
    )

Modules: `preferences` (UserPreferences, per-user persistence), `events` (FeedbackEvent, the
sample-file reader), `features` (measurable response features), `learner` (PreferenceLearner),
`memory` (UserMemory), `rewrite` (candidate rewrites and the meaning guard), `feedback`
(record_feedback), `turn` (the per-turn note every chat path uses), `model`
(PersonalizationModel, the folder format, the loader), `storage`
(database tables and per-user files). Attributes load lazily so the import stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AdaptedResponse",
    "FeedbackError",
    "FeedbackEvent",
    "PersonalNote",
    "PersonalizationModel",
    "PersonalizationParams",
    "PreferenceError",
    "PreferenceLearner",
    "UserMemory",
    "UserPreferences",
    "events_from_feedback_file",
    "load_personalization_model",
    "load_preferences",
    "personal_note",
    "read_personalization_folder",
    "record_feedback",
    "save_preferences",
    "update_preferences",
    "write_personalization_folder",
]

_WHERE = {
    "AdaptedResponse": "models.personalization.model",
    "FeedbackError": "models.personalization.events",
    "FeedbackEvent": "models.personalization.events",
    "PersonalNote": "models.personalization.turn",
    "PersonalizationModel": "models.personalization.model",
    "PersonalizationParams": "models.personalization.params",
    "PreferenceError": "models.personalization.preferences",
    "PreferenceLearner": "models.personalization.learner",
    "UserMemory": "models.personalization.memory",
    "UserPreferences": "models.personalization.preferences",
    "events_from_feedback_file": "models.personalization.events",
    "load_personalization_model": "models.personalization.model",
    "load_preferences": "models.personalization.preferences",
    "personal_note": "models.personalization.turn",
    "read_personalization_folder": "models.personalization.model",
    "record_feedback": "models.personalization.feedback",
    "save_preferences": "models.personalization.preferences",
    "update_preferences": "models.personalization.preferences",
    "write_personalization_folder": "models.personalization.model",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'models.personalization' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
