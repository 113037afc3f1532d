"""`PersonalityEngine`: personality models as a framework plugin (`personality_engine`).

    from framework.plugins.personality_engine import PersonalityEngine

    personality_engine = PersonalityEngine()
    personality_engine.load_model("luna_personality")
    response = personality_engine.generate_response(message="Hello, how are you?", emotional_context="romantic")

Without `load_model`, the engine speaks as `default_model` ("luna"). `emotional_context` is the
plugin-side name of `emotional_state`; `context` selects a scenario of the character's card.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from framework.hookspecs import hookimpl
from models.errors import UnknownContextError

__all__ = ["PersonalityEngine"]


class PersonalityEngine:
    """Loads a personality model and generates its responses."""

    name = "personality_engine"

    def __init__(self, model_manager: Any = None, default_model: str = "luna", *, framework: Any = None) -> None:
        self.model_manager = model_manager or (framework.model_manager if framework is not None else None)
        self.default_model = default_model
        self.model: Any = None

    def load_model(self, name: str) -> Any:
        """Load the personality `name` (e.g. `luna` or `luna_personality`) and speak as it."""
        from models.personality import load_personality_model

        self.model = load_personality_model(name, self.model_manager)
        return self.model

    def _current(self) -> Any:
        return self.model if self.model is not None else self.load_model(self.default_model)

    @staticmethod
    def _emotion(emotional_state: str | None, emotional_context: str | None) -> str | None:
        if emotional_state and emotional_context and emotional_state != emotional_context:
            raise UnknownContextError(
                "personality_engine", emotional_context, [emotional_state], what="emotional_context (conflicts)"
            )
        return emotional_state or emotional_context

    def generate_response(
        self,
        context: str | None = None,
        emotional_state: str | None = None,
        *,
        message: str | None = None,
        emotional_context: str | None = None,
        history: Sequence[Any] | None = None,
        user: str | None = None,
        **options: Any,
    ) -> Any:
        """The loaded character's `Response` (a str with `.emotion`, `.timings`, ...)."""
        emotion = self._emotion(emotional_state, emotional_context)
        return self._current().generate_response(
            context=context, emotional_state=emotion, message=message, history=history, user=user, **options
        )

    def stream_response(
        self,
        context: str | None = None,
        emotional_state: str | None = None,
        *,
        message: str | None = None,
        emotional_context: str | None = None,
        history: Sequence[Any] | None = None,
        user: str | None = None,
        **options: Any,
    ) -> Iterator[str]:
        emotion = self._emotion(emotional_state, emotional_context)
        return self._current().stream_response(
            context=context, emotional_state=emotion, message=message, history=history, user=user, **options
        )

    def greeting(self, user: str | None = None, context: str | None = None) -> str:
        return self._current().greeting(user=user, context=context)


@hookimpl
def register_plugins(register: Any) -> None:
    register("personality_engine", PersonalityEngine)
