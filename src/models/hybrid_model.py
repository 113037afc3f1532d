"""`HybridModel`: a personality speaking to one user the way that user likes.

    from models.hybrid_model import HybridModel

    model = HybridModel(personality_model="models/personality/luna",
                        personalization_model="models/personalization/user_prefs")
    response = model.generate_personalized_response(context="romantic_conversation", user_preferences=user_prefs)
    response.score, response.response_id, response.candidates

One turn: the user's stored and given preferences are merged; what we remember about the user
(`UserMemory.block`, within `memory_tokens`) and the preferences in words go into the prompt as a
system note just before the user's message; the personality generates `n` replies (`candidates`,
best of n; 1 by default); each reply and its meaning-preserving rewrites are scored by the user's
learner; the best is returned and logged with every candidate (`response_id`), so
`record_feedback(response.response_id, ...)` trains the learner. Facts the user states
("my name is ...") are remembered when `user=` is given.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.adaptive_model import AdaptiveModel
from models.config import ModelEntry
from models.errors import ModelNotFoundError
from models.gate import generating
from models.paths import classify_path
from models.personality.loader import load_personality, shared_manager
from models.personality.model import load_personality_model
from models.personality.params import PersonalityParams
from models.personalization.model import PersonalizationModel
from models.personalization.params import HybridParams, PersonalizationParams
from models.personalization.preferences import UserPreferences
from models.personalization.rewrite import candidates as rewrite_candidates
from models.personalization.storage import log_response
from models.personalization.turn import personal_note
from models.registry import LoadRequest

__all__ = ["HybridModel", "PersonalizedResponse"]


class PersonalizedResponse(str):
    """The reply (it *is* the string) with `response` (the personality's `Response` it came
    from), `score`, `candidates`, `scores`, `chosen`, `response_id`, `preferences`, `memory`
    (the facts block used) and `timings` (`personality_ms`, `personalization_ms`, `total_ms`)."""

    response: Any
    score: float
    candidates: list[str]
    scores: list[float]
    chosen: int
    response_id: str | None
    preferences: dict[str, Any]
    memory: str
    timings: dict[str, float]

    def __new__(cls, text: str, **meta: Any) -> PersonalizedResponse:
        obj = super().__new__(cls, text)
        for key in ("response", "response_id"):
            setattr(obj, key, meta.get(key))
        obj.score = float(meta.get("score", 0.0))
        obj.candidates = list(meta.get("candidates") or [text])
        obj.scores = list(meta.get("scores") or [])
        obj.chosen = int(meta.get("chosen", 0))
        obj.preferences = dict(meta.get("preferences") or {})
        obj.memory = str(meta.get("memory") or "")
        obj.timings = dict(meta.get("timings") or {})
        return obj

    @property
    def text(self) -> str:
        return str.__str__(self)

    @property
    def emotion(self) -> str | None:
        return getattr(self.response, "emotion", None)

    def to_dict(self) -> dict[str, Any]:
        base = self.response.to_dict() if hasattr(self.response, "to_dict") else {}
        return {
            **base,
            "text": self.text,
            "score": self.score,
            "candidates": self.candidates,
            "scores": self.scores,
            "chosen": self.chosen,
            "response_id": self.response_id,
            "preferences": self.preferences,
            "memory": self.memory,
            "timings": {**base.get("timings", {}), **self.timings},
        }

    def __repr__(self) -> str:
        return f"PersonalizedResponse({self.text!r}, score={self.score:.3f}, response_id={self.response_id!r})"


def _manager(manager: Any) -> Any:

    return manager or shared_manager()


def _load_personality(ref: Any, manager: Any) -> Any:
    if not isinstance(ref, str | Path):
        return ref  # a PersonalityModel (or anything with generate_response)

    raw = str(ref)
    kind = classify_path(raw)
    if kind.kind == "store" and kind.category == "personality" and kind.name:
        return load_personality_model(kind.name, manager)
    if kind.kind == "folder" and kind.folder is not None:
        entry = ModelEntry(type="personality", path=str(kind.folder))
        request = LoadRequest("personality", kind.folder.name, entry, kind, PersonalityParams())
        return load_personality(manager, request)
    return load_personality_model(raw.split("/")[-1], manager)


def _load_personalization(ref: Any, manager: Any, params: PersonalizationParams | None) -> PersonalizationModel:
    if isinstance(ref, PersonalizationModel):
        return ref
    if ref is None:
        return PersonalizationModel(params=params, manager=manager)

    return AdaptiveModel(ref, params=params, manager=manager)


class HybridModel:
    """A personality model + a personalization model (see the module docstring)."""

    def __init__(
        self,
        personality_model: Any = "models/personality/luna",
        personalization_model: Any = "models/personalization/user_prefs",
        *,
        candidates: int | None = None,
        params: PersonalizationParams | None = None,
        manager: Any = None,
        name: str | None = None,
    ) -> None:
        manager = _manager(manager)
        self.personality = _load_personality(personality_model, manager)
        self.personalization = _load_personalization(personalization_model, manager, params)
        self.params = self.personalization.params
        self.candidates = int(candidates or self.params.candidates)
        if not 1 <= self.candidates <= 16:
            raise ValueError(f"candidates: expected 1 to 16, got {self.candidates}")
        self.name = name or f"{getattr(self.personality, 'name', 'personality')}+{self.personalization.name}"

    @generating
    def generate_personalized_response(
        self,
        context: str | None = None,
        user_preferences: UserPreferences | dict[str, Any] | None = None,
        message: str | None = None,
        user: str | None = None,
        *,
        emotional_state: str | None = None,
        history: Sequence[Any] | None = None,
        n: int | None = None,
        remember: bool = True,
        log: bool | None = None,
        **options: Any,
    ) -> PersonalizedResponse:
        """The personality's reply to `message` (or its opening in `context`), as this user likes it."""
        t0 = time.perf_counter()
        n = self.candidates if n is None else n
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 16:
            raise ValueError(f"n: expected 1 to 16 candidates, got {n!r}")
        pz = self.personalization
        prefs = pz.preferences_for(user, user_preferences)
        learner = pz.learner_for(user, prefs)
        note = personal_note(
            user, message, preferences=prefs, remember=remember, query=message or context,
            memory_tokens=self.params.memory_tokens,
        )  # fmt: skip
        memory = note.memory
        keep = history is None
        session = self.personality.session(user) if keep and hasattr(self.personality, "session") else None
        past = list(session.history) if session is not None else list(history or [])
        turn_history = note.before_message(past)
        t_prep = time.perf_counter()
        turn = {"context": context, "emotional_state": emotional_state, "message": message, "user": user}
        replies = self._replies(n, session, turn_history, turn, options)
        t_gen = time.perf_counter()
        where = message or context
        pool, origin = self._rewrites(replies, prefs)
        scores = [learner.score(t, where) for t in pool]
        best = max(range(len(pool)), key=lambda i: (scores[i], -i))
        text = pool[best]
        base_reply = replies[origin[best]]
        if session is not None:
            if message is not None:
                session.history.append({"role": "user", "content": message})
            session.history.append({"role": "assistant", "content": text})
        logged = pz.params.log_responses if log is None else log
        response_id = self._log(user, where, pool, scores, best, n, base_reply) if logged else None
        t_end = time.perf_counter()
        return PersonalizedResponse(
            text,
            response=base_reply,
            score=scores[best],
            candidates=pool,
            scores=scores,
            chosen=best,
            response_id=response_id,
            preferences=prefs.explicit(),
            memory=memory,
            timings={
                "personality_ms": round((t_gen - t_prep) * 1000, 3),
                "personalization_ms": round(((t_prep - t0) + (t_end - t_gen)) * 1000, 3),
                "total_ms": round((t_end - t0) * 1000, 3),
            },
        )

    def _log(
        self, user: str | None, where: str | None, pool: list[str], scores: list[float], best: int, n: int, reply: Any
    ) -> str:
        """The turn in the response log (candidates, scores, the choice): what feedback refers to."""
        return log_response(
            user=user,
            category="personality",
            model=str(getattr(self.personality, "name", "personality")),
            version=getattr(self.personality, "version", None),
            personalization=self.personalization.name,
            context=where,
            text=pool[best],
            candidates=pool,
            scores=scores,
            chosen=best,
            details={"generations": n, "emotion": getattr(reply, "emotion", None)},
            background=True,
        )

    def _replies(
        self, n: int, session: Any, history: list[Any], turn: dict[str, Any], options: dict[str, Any]
    ) -> list[Any]:
        """`n` replies of the personality to the same turn, seeds `seed`, `seed + 1`, ...; each
        starts from the emotional state the turn found (a reply moves the kept session's)."""
        saved_state = copy.deepcopy(session.state) if session is not None and n > 1 else None
        seed = options.pop("seed", None)
        replies = []
        for i in range(n):
            if i and saved_state is not None:
                session.state = copy.deepcopy(saved_state)
            seed_i = None if seed is None else seed + i
            replies.append(self.personality.generate_response(history=history, seed=seed_i, **turn, **options))
        return replies

    def _rewrites(self, replies: list[Any], prefs: UserPreferences) -> tuple[list[str], list[int]]:
        """Every distinct rewrite of every reply for these preferences (a reply itself among
        them), and which reply each came from."""
        pool: list[str] = []
        origin: list[int] = []
        for k, reply in enumerate(replies):
            text = str(reply)
            for candidate in rewrite_candidates(text, prefs, extra=self.personalization.rewrites(text, prefs)):
                if candidate not in pool:
                    pool.append(candidate)
                    origin.append(k)
        if not pool:
            pool, origin = [str(replies[0])], [0]
        return pool, origin

    @generating
    def adapt_response(self, base_response: str, user_preferences: Any = None, **kwargs: Any) -> Any:
        """Adapt a finished response with this model's personalization part (no generation)."""
        return self.personalization.adapt_response(base_response, user_preferences, **kwargs)

    def record_feedback(self, response_id: str, **feedback: Any) -> Any:
        """Feedback on one of this model's replies (see `models.personalization.record_feedback`)."""
        return self.personalization.record_feedback(response_id, **feedback)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "hybrid",
            "candidates": self.candidates,
            "personality": self.personality.info() if hasattr(self.personality, "info") else str(self.personality),
            "personalization": self.personalization.info(),
        }

    def close(self) -> None:
        """Nothing to release: both parts are shared through the manager."""

    def __repr__(self) -> str:
        return f"HybridModel({self.name!r}, candidates={self.candidates})"


def load_hybrid(manager: Any, request: LoadRequest) -> HybridModel:
    """Loader of `type: hybrid` entries: `path` is the personalization folder,
    `parameters.personality` the personality."""
    params = request.params
    if not isinstance(params, HybridParams):
        params = HybridParams.model_validate(request.entry.parameters)
    folder = request.ref.folder
    if folder is None or not folder.is_dir():
        raise ModelNotFoundError(f"hybrid model {request.name!r}: path {request.entry.path!r} must be a folder")
    pz_params = PersonalizationParams.model_validate(params.model_dump(exclude={"personality"}))
    personalization = PersonalizationModel(
        folder, name=request.name, params=pz_params, version=request.ref.version, manager=manager
    )
    personality = params.personality
    if "/" in personality and not Path(personality).exists():
        category, pname = personality.split("/", 1)
        personality_model: Any = manager.load_model(category, pname)
    else:
        personality_model = load_personality_model(personality, manager)
    return HybridModel(personality_model, personalization, manager=manager, name=request.name)
