"""`PersonalityModel`: a base model speaking as a character, with an emotional state.

    personality_model = load_personality_model("luna_personality")
    response = personality_model.generate_response(context="romantic_conversation", emotional_state="romantic")
    print(response, response.emotion, response.timings)

One turn: the user's message is classified and moves the emotional state (which first decays
toward the temperament); `emotional_state=` overrides it for the turn; the lorebook is
scanned; traits become settings and instructions; the prompt is assembled within the context
budget; the base model generates, with the emotion as a control token (models trained with
them, see `companion.json` `"emotion_control": true`) or in words (any other model).

Conversation state (history, emotional state, context) is kept per `user=`; passing
`history=` uses the caller's history instead and leaves the kept one untouched.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from models.engines.base import PerThread
from models.errors import DataError, UnknownContextError
from models.gate import checked_attribute, generating
from models.personality.behavior import GenerationPlan, behavior_score, plan_turn, token_label
from models.personality.card import CharacterCard
from models.personality.choice import (
    DEFAULT_CARD_FOCUS,
    DEFAULT_SPECIFICITY,
    CardGuides,
    best_of,
    candidate_count,
    claim_engine,
    clean_reply,
    small_model_weight,
)
from models.personality.emotion import EmotionalState
from models.personality.extension import CompanionExtension, Scenario
from models.personality.feeling import CharacterFeeling
from models.personality.interaction import normalize_history, pick_greeting, window
from models.personality.macros import expand_macros
from models.personality.params import PersonalityParams
from models.personality.prompt import AssembledPrompt, assemble_prompt, emotion_sentence
from models.personality.response import Response, timings, usage
from models.personality.sessions import Session

__all__ = ["PersonalityModel", "Response", "load_personality_model"]

log = logging.getLogger(__name__)


@dataclass
class _Turn:
    prompt: AssembledPrompt
    plan: GenerationPlan
    emotion: str | None
    context: str | None
    session: Session
    keep: bool
    message: str | None
    options: dict[str, Any]
    t0: float
    prompt_s: float
    candidates: int = 1
    user: str | None = None
    release: Callable[[], None] | None = None
    """For a stream that took the free engine for its best of N: lets the engine go."""


class PersonalityModel:
    """A character card + emotional model + behaviour over a base `TransformerModel`."""

    #: Keep each named user's session (emotional state, scenario, turn) in the database, read at
    #: the start of a turn and written at its end, so server replicas share it (`companion serve`).
    shared_sessions: bool = False
    #: The `Response` of this thread's last call (calls overlap in a server that batches).
    last_response = PerThread()

    def __init__(
        self,
        card: CharacterCard,
        base: Any,
        *,
        params: PersonalityParams | None = None,
        name: str | None = None,
        version: str | None = None,
        classifier: Any = None,
        emotion_trained: bool | None = None,
    ) -> None:
        self.card = card
        self._base = base
        self.params = params or PersonalityParams()
        self.name = name or card.name.lower()
        self.version = version or card.character_version or None
        self.ext: CompanionExtension = card.companion
        self.feeling = CharacterFeeling(
            self.name, self.ext.emotion, lambda: self.params, self._base_codec(), classifier, emotion_trained
        )
        self._card_guides = CardGuides()
        self._sessions: dict[str, Session] = {}
        self._lock = threading.RLock()
        self.last_response: Response | None = None

    # --- information --------------------------------------------------------------------------

    @property
    def base(self) -> Any:
        """The base model: it generates without this personality's gate, so handing it out needs
        `generate` on this personality (checked unless already inside a checked call)."""
        checked_attribute(self, "base")
        return self._base

    def _base_codec(self) -> Any:
        """The base model's tokenizer (None for remote engines): reading, not generating."""
        if hasattr(self._base, "codec"):
            return self._base.codec
        return getattr(getattr(self._base, "engine", None), "codec", None)

    @property
    def character(self) -> str:
        return self.card.display_name

    @property
    def labels(self) -> list[str]:
        return list(self.ext.emotion.labels)

    def contexts(self) -> list[str]:
        """The `context=` keys this character defines."""
        return sorted(self.ext.scenarios)

    def info(self) -> dict[str, Any]:
        base_info = self._base.info() if hasattr(self._base, "info") else {}
        return {
            "name": self.name,
            "character": self.card.name,
            "version": self.version,
            "spec": self.card.spec,
            "emotion_control": self.control,
            "emotion_steering": self.params.emotion_steering if self.steering is not None else 0.0,
            "labels": self.labels,
            "contexts": self.contexts(),
            "base_model": base_info,
        }

    @property
    def control(self) -> str:
        """How the emotional state reaches the base model: `token`, `prompt` or `none`."""
        return self.feeling.control

    @property
    def steering(self) -> Any:
        """The `EmotionSteering` of this character over its base model's tokenizer, or None
        (`CharacterFeeling.steering`)."""
        return self.feeling.steering

    @property
    def classifier(self) -> Any:
        """The emotion classifier (None when it cannot be loaded: detection is then skipped)."""
        return self.feeling.classifier

    # --- sessions -----------------------------------------------------------------------------

    def session(self, user: str | None = None) -> Session:
        key = user or ""
        with self._lock:
            if key not in self._sessions:
                state = EmotionalState.from_settings(self.ext.emotion, self.ext.baseline())
                self._sessions[key] = Session(state=state, context=self.ext.default_context)
            return self._sessions[key]

    def emotional_state(self, user: str | None = None) -> EmotionalState:
        return self.session(user).state

    def reset(self, user: str | None = None) -> None:
        """Forget the conversation (history, emotional state, context) with `user`."""
        with self._lock:
            self._sessions.pop(user or "", None)
        if self.shared_sessions and user:
            from models.personality.sessions import save_session

            save_session(f"personality/{self.name}", user, None)

    def user_name(self, user: str | None = None) -> str:
        return user or self.params.user_name or self.ext.interaction.user_name

    def greeting(self, user: str | None = None, context: str | None = None, index: int | None = None) -> str:
        """The opening line (the context's own greeting first), macros expanded."""
        scenario = self._scenario(context)[1]
        greetings = ([scenario.first_mes] if scenario and scenario.first_mes else []) + self.card.greetings()
        text = pick_greeting(greetings, self.ext.interaction.greeting, index)
        return expand_macros(text, char=self.character, user=self.user_name(user))

    def greetings(self, user: str | None = None, context: str | None = None) -> list[str]:
        """Every opening line the card offers (the context's own first, then `first_mes` and the
        alternates), macros expanded, without repeats: a new chat's first message and its swipes."""
        scenario = self._scenario(context)[1]
        found = ([scenario.first_mes] if scenario and scenario.first_mes else []) + self.card.greetings()
        name = self.user_name(user)
        return list(dict.fromkeys(expand_macros(g, char=self.character, user=name) for g in found))

    def start(self, user: str | None = None, context: str | None = None) -> str:
        """Reset the conversation with `user`, greet, and keep the greeting as the first message."""
        self.reset(user)
        session = self.session(user)
        session.context = context or self.ext.default_context
        self._scenario(session.context)
        text = self.greeting(user, session.context)
        if text:
            session.history.append({"role": "assistant", "content": text})
        return text

    def system_prompt(self, user: str | None = None, context: str | None = None) -> str:
        """The system turn this character starts every prompt with (card, scenario, example
        dialogue and instructions, macros expanded), e.g. for an Ollama Modelfile's SYSTEM."""
        _, scenario = self._scenario(context)
        _plan, instructions = self._plan(None, scenario, {})
        prompt = assemble_prompt(
            self.card,
            user=self.user_name(user),
            message=None,
            history=[],
            scenario_text=scenario.scenario if scenario else self.card.scenario,
            instructions=instructions,
            example_mode=self.ext.interaction.example_dialogue,
            rng=random.Random(0),
        )
        first = prompt.messages[0] if prompt.messages else {}
        return str(first.get("content", "")) if first.get("role") == "system" else ""

    # --- generation ---------------------------------------------------------------------------

    @generating
    def generate_response(
        self,
        context: str | None = None,
        emotional_state: str | None = None,
        message: str | None = None,
        history: Sequence[Any] | None = None,
        user: str | None = None,
        **options: Any,
    ) -> Response:
        """The character's reply (see the module docstring). `options`: max_length, seed, temperature."""
        turn = self._prepare(context, emotional_state, message, history, user, options)
        text = self._generate(turn)
        return self._finish(turn, text)

    @generating
    def stream_response(
        self,
        context: str | None = None,
        emotional_state: str | None = None,
        message: str | None = None,
        history: Sequence[Any] | None = None,
        user: str | None = None,
        **options: Any,
    ) -> Iterator[str]:
        """Yield the reply as it decodes, or a best of N's chosen reply (cleaned, as `Response.text`)
        as one piece (`choice.claim_engine`); `last_response` holds the `Response` afterwards."""
        turn = self._prepare(context, emotional_state, message, history, user, options, streaming=True)
        if turn.candidates > 1:  # the chosen reply, whole and cleaned, as one piece
            try:
                text = self._generate(turn)
            finally:
                if turn.release is not None:
                    turn.release()
            yield self._finish(turn, text).text
            return
        pieces = []
        for piece in self._base.stream_chat(turn.prompt.messages, turn.plan.max_new_tokens, **turn.options):
            pieces.append(piece)
            yield piece
        self._finish(turn, "".join(pieces))

    def _scenario(self, key: str | None) -> tuple[str | None, Scenario | None]:
        if key is None:
            return None, None
        if not isinstance(key, str) or key not in self.ext.scenarios:
            raise UnknownContextError(self.card.name, str(key), self.ext.scenarios)
        return key, self.ext.scenarios[key]

    def _check_emotion(self, emotional_state: Any) -> str | None:
        if emotional_state is None:
            return None
        if not isinstance(emotional_state, str) or emotional_state not in self.labels:
            raise UnknownContextError(self.card.name, str(emotional_state), self.labels, what="emotional state")
        return emotional_state

    def _prepare(
        self,
        context: str | None,
        emotional_state: Any,
        message: str | None,
        history: Sequence[Any] | None,
        user: str | None,
        options: dict[str, Any],
        streaming: bool = False,
    ) -> _Turn:
        t0 = time.perf_counter()
        partial = options.pop("partial", None)
        if partial is not None and (not isinstance(partial, str) or message is None):
            raise DataError("partial: the answer so far (a string) continues a reply to a message; give message= too")
        override = self._check_emotion(emotional_state)
        owner = options.pop("session", None) or user  # whose state this is (a server's caller), beside the name
        session, key, scenario = self._enter(owner, context)
        keep = history is None
        past = session.history if keep else normalize_history(history)
        past = window(past, self.params.history_turns or self.ext.interaction.history_turns)
        if message is not None:
            self.feeling.observe(session, message)
        emotion = override or session.state.emotion
        name = self.user_name(user)
        plan, instructions = self._plan(message, scenario, options)
        engine = getattr(self._base, "engine", None)
        prompt = self._prompt(session, scenario, name, message, past, plan, instructions, emotion, engine, options)
        sampling = {**plan.sampling(), **options}
        if prompt.emotion:
            sampling["emotion"] = prompt.emotion
        if "guide" not in sampling:
            guide = self._guide(emotion, scenario, name, engine)
            if guide is not None:
                sampling["guide"] = guide
        batched = hasattr(self._base, "chat_candidates") and bool(getattr(engine, "decodes_together", False))
        candidates = candidate_count(self.params.emotion_rerank, engine, batched)
        if partial is not None:  # continue the shown answer: it opens the answer's turn
            prompt.messages.append({"role": "assistant", "content": partial})
            sampling["continue_final"] = True
            candidates = 1
        release = None
        if streaming and candidates > 1 and self.params.emotion_rerank is None:
            release = claim_engine(engine)  # the default best of N only while the engine is free
            if release is None:
                candidates = 1
        prompt_s = time.perf_counter() - t0
        return _Turn(
            prompt, plan, emotion, key, session, keep, message, sampling, t0, prompt_s, candidates, owner, release
        )

    def _enter(self, owner: str | None, context: str | None) -> tuple[Session, str | None, Scenario | None]:
        """`owner`'s session (restored from the shared store where sessions are shared) with the
        turn's scenario: a newly entered scenario sets its mood."""
        session = self.session(owner)
        if self.shared_sessions and owner:
            from models.personality.sessions import restore

            restore(session, f"personality/{self.name}", owner, self.ext.scenarios)
        key, scenario = self._scenario(context if context is not None else session.context)
        if key != session.context and scenario is not None and scenario.emotion:
            session.state.set(scenario.emotion, 0.5)
        session.context = key
        return session, key, scenario

    def _prompt(
        self,
        session: Session,
        scenario: Scenario | None,
        name: str,
        message: str | None,
        past: list[dict[str, Any]],
        plan: GenerationPlan,
        instructions: list[str],
        emotion: str | None,
        engine: Any,
        options: dict[str, Any],
    ) -> AssembledPrompt:
        """The card, the active lorebook entries, the history and the emotion as one prompt,
        within the base model's context less the reply's tokens."""
        count = self._count_tokens
        lore = self.card.lorebook.activate(
            [m["content"] for m in past] + ([message] if message else []), count_tokens=count, turn=session.turn
        )
        token = token_label(self.ext.emotion, emotion) if self.control == "token" else None
        in_words = None
        if emotion and (self.control == "prompt" or (self.control == "token" and token is None)):
            in_words = emotion_sentence(emotion, self.ext.emotion.expressions.get(emotion, ""))
        context_len = self.params.context_tokens or int(getattr(engine, "context_length", 4096))
        return assemble_prompt(
            self.card,
            user=name,
            message=message,
            history=past,
            scenario_text=scenario.scenario if scenario else self.card.scenario,
            lore=lore,
            instructions=instructions,
            emotion=token,
            emotion_in_prompt=in_words,
            example_mode=self.ext.interaction.example_dialogue,
            count_tokens=count,
            budget=max(32, context_len - plan.max_new_tokens - 4),
            rng=random.Random(options.get("seed")),
        )

    def _guide(self, emotion: str | None, scenario: Scenario | None, name: str, engine: Any) -> Any:
        """Emotion steering and the card guide, chained; None when neither applies."""
        from models.personality.grounding import GuideChain

        steering = self.steering if emotion else None
        card = self._card_guide(scenario.scenario if scenario else None, name, engine)
        return GuideChain.of([steering.guide(emotion) if steering is not None else None, card])

    def _card_guide(self, scenario: str | None, user: str, engine: Any) -> Any:
        focus = small_model_weight(self.params.card_focus, engine, DEFAULT_CARD_FOCUS)
        return self._card_guides.get(self.card, scenario, user, self.character, self._base_codec(), focus)

    def _plan(
        self, message: str | None, scenario: Scenario | None, options: dict[str, Any]
    ) -> tuple[GenerationPlan, list[str]]:
        """Generation settings and instructions from traits, context and the message."""
        p = self.params
        max_length = int(options.pop("max_length", None) or p.max_length)
        temperature = float(options.pop("temperature", p.temperature))
        return plan_turn(self.ext, message, scenario, max_length, temperature, p.repetition_penalty)

    def _count_tokens(self, text: str) -> int:
        engine = getattr(self._base, "engine", None)
        return engine.count_tokens(text) if engine is not None else max(1, len(text) // 4)

    def _generate(self, turn: _Turn) -> str:
        n = turn.candidates
        messages, max_new = turn.prompt.messages, turn.plan.max_new_tokens
        if n <= 1:
            return self._base.chat(messages, max_new, **turn.options)
        specificity = small_model_weight(
            self.params.specificity, getattr(self._base, "engine", None), DEFAULT_SPECIFICITY
        )
        judge = functools.partial(self._judge, turn=turn)
        fluency = self.params.fluency_weight
        return best_of(self._base, messages, n, max_new, turn.options, judge, fluency, specificity, turn.message or "")

    def _judge(self, text: str, turn: _Turn) -> tuple[float, float]:
        """A candidate's agreement with the turn's emotion and its fit to the behaviour plan,
        for `choice.rank`."""
        return self.feeling.agreement(text, turn.emotion), behavior_score(text, turn.plan)

    def _clean(self, text: str) -> str:
        return clean_reply(text, (self.character, self.card.name), trim=self.params.trim_incomplete)

    def _finish(self, turn: _Turn, raw: str) -> Response:
        structured = turn.options.get("response_format") not in (None, {"type": "text"})
        text = raw.strip() if structured else self._clean(raw)  # JSON is kept exactly as decoded
        if turn.options.get("continue_final") and text:  # a continuation keeps the space it starts with
            text = raw[: len(raw) - len(raw.lstrip())] + text
        t_end = time.perf_counter()
        session = turn.session
        if turn.keep:
            if turn.message is not None:
                session.history.append({"role": "user", "content": turn.message})
            session.history.append({"role": "assistant", "content": text})
        session.turn += 1
        if self.shared_sessions and turn.user:
            from models.personality.sessions import store

            store(session, f"personality/{self.name}", turn.user)
        stats = getattr(self._base, "last_stats", None)
        detected = self.feeling.detect(text)
        response = Response(
            text,
            emotion=turn.emotion,
            detected_emotion=detected,
            character=self.card.name,
            model=self.name,
            version=self.version,
            base_model=getattr(self._base, "name", str(self._base)),
            context=turn.context,
            timings=timings(turn.t0, turn.prompt_s, t_end, stats),
            usage=usage(stats),
            prompt={"kept": turn.prompt.kept, "dropped": turn.prompt.dropped, "tokens": turn.prompt.prompt_tokens},
        )
        self.last_response = response
        return response

    def close(self) -> None:
        """Nothing to release: the base model is shared and owned by its cache."""

    def __repr__(self) -> str:
        return f"PersonalityModel({self.name!r}, character={self.card.name!r}, control={self.control!r})"


def load_personality_model(name: str, manager: Any = None) -> PersonalityModel:
    """The personality model `name` (also `name_personality`) from the config, loaded once."""
    from models.personality.loader import shared_manager, wrap_plain_model

    manager = manager or shared_manager()
    model = manager.load_model("personality", name)
    if isinstance(model, PersonalityModel):
        return model
    return wrap_plain_model(manager, name, model)
