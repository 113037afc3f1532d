"""`PersonalizationEngine`: personalization models as a framework plugin (`personalization_engine`).

    framework = get_framework()
    personality_plugin = framework.get_plugin("personality_engine")
    personalization_plugin = framework.get_plugin("personalization_engine")

    response = personality_plugin.generate_response(context, emotional_state)
    adapted_response = personalization_plugin.adapt_response(response, user_prefs)

Without `load_model`, the engine uses `default_model` ("user_prefs"). `generate_response`
speaks as a personality (`personality=`, "luna" by default) through a `HybridModel`;
`record_feedback` trains the user's learner.
"""

from __future__ import annotations

from typing import Any

from framework.hookspecs import hookimpl

__all__ = ["PersonalizationEngine"]


class PersonalizationEngine:
    """Loads a personalization model and adapts responses with it."""

    name = "personalization_engine"

    def __init__(
        self,
        model_manager: Any = None,
        default_model: str = "user_prefs",
        personality: str = "luna",
        *,
        framework: Any = None,
    ) -> None:
        self.model_manager = model_manager or (framework.model_manager if framework is not None else None)
        self.default_model = default_model
        self.default_personality = personality
        self.model: Any = None
        self._hybrids: dict[str, Any] = {}

    def load_model(self, name: str) -> Any:
        """Load the personalization model `name` (e.g. `user_prefs`, `user_preferences`)."""
        from models.personalization import load_personalization_model

        self.model = load_personalization_model(name, self.model_manager)
        self._hybrids.clear()
        return self.model

    def _current(self) -> Any:
        return self.model if self.model is not None else self.load_model(self.default_model)

    def adapt_response(
        self, response: str, user_preferences: Any = None, *, user: str | None = None, context: str | None = None
    ) -> Any:
        """`response` adapted to the user (an `AdaptedResponse`, a str with `.score`)."""
        context = context if context is not None else getattr(response, "context", None)
        return self._current().adapt_response(str(response), user_preferences, user=user, context=context)

    def generate_response(
        self,
        context: str | None = None,
        user_preferences: Any = None,
        *,
        message: str | None = None,
        user: str | None = None,
        personality: str | None = None,
        **options: Any,
    ) -> Any:
        """A personality's reply, personalized (see `HybridModel.generate_personalized_response`)."""
        from models.hybrid_model import HybridModel

        name = personality or self.default_personality
        hybrid = self._hybrids.get(name)
        if hybrid is None:
            from models.personality import load_personality_model

            persona = load_personality_model(name, self.model_manager)
            hybrid = HybridModel(persona, self._current(), manager=self.model_manager)
            self._hybrids[name] = hybrid
        return hybrid.generate_personalized_response(
            context=context, user_preferences=user_preferences, message=message, user=user, **options
        )

    def record_feedback(self, response_id: str, **feedback: Any) -> Any:
        from models.personalization import record_feedback

        return record_feedback(response_id, **feedback)


@hookimpl
def register_plugins(register: Any) -> None:
    register("personalization_engine", PersonalizationEngine)
