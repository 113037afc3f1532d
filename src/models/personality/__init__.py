"""Personality models: a base model + a character card + an emotional model + behaviour.

    from models.personality import load_personality_model

    personality_model = load_personality_model("luna_personality")
    response = personality_model.generate_response(context="romantic_conversation", emotional_state="romantic")

Modules: `card` (Character Card V1/V2/V3, JSON/PNG/CHARX), `lorebook`, `macros`, `extension`
(our card fields), `emotion` (classifier + state), `behavior`, `interaction`, `prompt`
(assembly within the context budget), `model` (`PersonalityModel`, `Response`, the loader),
`params` (config schema). Attributes load lazily so `import models.personality` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "BehaviorTraits",
    "CardError",
    "CharacterCard",
    "CompanionExtension",
    "Detection",
    "EmotionClassifier",
    "EmotionalState",
    "Lorebook",
    "PersonalityModel",
    "PersonalityParams",
    "Response",
    "Scenario",
    "load_card",
    "load_personality_model",
]

_WHERE = {
    "BehaviorTraits": "models.personality.extension",
    "CardError": "models.errors",
    "CharacterCard": "models.personality.card",
    "CompanionExtension": "models.personality.extension",
    "Detection": "models.personality.emotion",
    "EmotionClassifier": "models.personality.emotion",
    "EmotionalState": "models.personality.emotion",
    "Lorebook": "models.personality.lorebook",
    "PersonalityModel": "models.personality.model",
    "PersonalityParams": "models.personality.params",
    "Response": "models.personality.model",
    "Scenario": "models.personality.extension",
    "load_card": "models.personality.card",
    "load_personality_model": "models.personality.model",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'models.personality' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
