"""`PersonalizationModel`: preferences + a learner prior, adapting responses to one user.

    from models.personalization import load_personalization_model

    personalization_model = load_personalization_model("user_preferences")
    adapted = personalization_model.adapt_response(base_response="Hello, how can I help you?",
                                                   user_preferences={"tone": "warm", "length": "short"})
    adapted.score, adapted.candidates, adapted.response_id

A personalization model FOLDER (what the store versions under category `personalization`)::

    companion.json       {"format": "companion-model/1", "kind": "personalization", "version": ...}
    preferences.json     default UserPreferences ({"format": "companion-preferences/1", ...})
    learner.safetensors  the population prior (PreferenceLearner tensors)
    learner.json         its metadata
    adapter/             optional PEFT LoRA adapter (tolerated; used by engines that load one)
    manifest.json        sha256 of every file

Per-user state (a user's own learner, stored preferences, memory) lives in COMPANION_HOME,
never in the folder: see `storage`.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from models.errors import DataError, ModelNotFoundError
from models.gate import generating
from models.personalization.learner import PreferenceLearner
from models.personalization.params import PersonalizationParams
from models.personalization.preferences import PreferenceError, UserPreferences
from models.personalization.rewrite import candidates as rewrite_candidates
from models.registry import LoadRequest

__all__ = [
    "AdaptedResponse",
    "PersonalizationModel",
    "load_personalization_model",
    "read_personalization_folder",
    "write_builtin_folder",
    "write_personalization_folder",
]

PREFS_FORMAT = "companion-preferences/1"


class AdaptedResponse(str):
    """The adapted text (it *is* the string) plus how it was chosen.

    `base` (the response before adaptation), `score` (the learner's predicted satisfaction,
    0–1), `candidates` and `scores` (every candidate considered, the base first), `chosen`
    (index into candidates), `response_id` (for `record_feedback`; None when not logged),
    `preferences` (the explicit settings used), `timings` (ms).
    """

    base: str
    score: float
    candidates: list[str]
    scores: list[float]
    chosen: int
    response_id: str | None
    preferences: dict[str, Any]
    timings: dict[str, float]

    def __new__(cls, text: str, **meta: Any) -> AdaptedResponse:
        obj = super().__new__(cls, text)
        obj.base = meta.get("base", text)
        obj.score = float(meta.get("score", 0.0))
        obj.candidates = list(meta.get("candidates") or [text])
        obj.scores = list(meta.get("scores") or [])
        obj.chosen = int(meta.get("chosen", 0))
        obj.response_id = meta.get("response_id")
        obj.preferences = dict(meta.get("preferences") or {})
        obj.timings = dict(meta.get("timings") or {})
        return obj

    @property
    def text(self) -> str:
        return str.__str__(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "base": self.base,
            "score": self.score,
            "candidates": self.candidates,
            "scores": self.scores,
            "chosen": self.chosen,
            "response_id": self.response_id,
            "preferences": self.preferences,
            "timings": self.timings,
        }

    def __repr__(self) -> str:
        return f"AdaptedResponse({self.text!r}, score={self.score:.3f}, chosen={self.chosen})"


# --- the folder ----------------------------------------------------------------------------------


def write_personalization_folder(
    folder: str | Path,
    preferences: UserPreferences | dict[str, Any] | None,
    learner: PreferenceLearner,
    meta: dict[str, Any] | None = None,
    *,
    manifest: bool = True,
) -> Path:
    """Write a personalization model folder (see the module docstring); each file atomically,
    `companion.json` and `manifest.json` last. `meta` adds keys to `companion.json` (e.g.
    `version`, `lineage`, `metrics`); an existing `adapter/` is left in place."""
    from models.fileio import atomic_write_json, package_version

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    prefs = UserPreferences.coerce(preferences)
    atomic_write_json(folder / "preferences.json", {"format": PREFS_FORMAT, **prefs.model_dump()})
    learner.save(folder)
    info = {
        "format": "companion-model/1",
        "kind": "personalization",
        "name": folder.name,
        "version": "1.0.0",
        **(meta or {}),
        "package_version": package_version(),
    }
    info["kind"] = "personalization"
    info["format"] = "companion-model/1"
    atomic_write_json(folder / "companion.json", info)
    if manifest:
        from models.integrity import write_manifest

        write_manifest(folder)
    return folder


def read_personalization_folder(folder: str | Path) -> tuple[UserPreferences, PreferenceLearner, dict[str, Any]]:
    """`(preferences, prior learner, companion.json)` of a folder; errors name the file."""
    from models.integrity import check_safe_files, verify_manifest

    folder = Path(folder)
    meta_path = folder / "companion.json"
    if not meta_path.exists():
        raise ModelNotFoundError(f"{folder}: not a personalization folder (no companion.json)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{meta_path}: not JSON ({exc.msg})") from None
    if not isinstance(meta, dict) or meta.get("kind") != "personalization":
        kind = meta.get("kind") if isinstance(meta, dict) else None
        raise DataError(f"{meta_path}: kind must be 'personalization', got {kind!r}")
    check_safe_files(folder)
    if (folder / "manifest.json").exists():
        verify_manifest(folder)
    prefs_path = folder / "preferences.json"
    prefs = UserPreferences.from_file(prefs_path) if prefs_path.exists() else UserPreferences()
    learner = PreferenceLearner.load(folder) if (folder / "learner.json").exists() else PreferenceLearner()
    return prefs, learner, meta


# --- the model -----------------------------------------------------------------------------------


class PersonalizationModel:
    """Adapts responses to a user: candidate rewrites ranked by the user's learner."""

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        name: str = "user_prefs",
        params: PersonalizationParams | None = None,
        version: str | None = None,
        manager: Any = None,
    ) -> None:
        self.name = name
        self.params = params or PersonalizationParams()
        self.folder = Path(folder) if folder is not None else None
        if self.folder is not None:
            self.defaults, self.prior, self.meta = read_personalization_folder(self.folder)
        else:
            self.defaults, self.prior, self.meta = UserPreferences(), PreferenceLearner(), {}
        self.version = version or self.meta.get("version")
        self.adapter = self.folder / "adapter" if self.folder and (self.folder / "adapter").is_dir() else None
        self._manager = manager
        self._rewriter: Any = None
        self._lock = threading.RLock()

    # --- users ---------------------------------------------------------------------------

    def preferences_for(
        self, user: str | None = None, given: UserPreferences | dict[str, Any] | None = None
    ) -> UserPreferences:
        """The folder's defaults, then the user's stored preferences, then `given` on top."""
        from models.personalization.preferences import load_preferences

        prefs = self.defaults
        if user is not None:
            stored = load_preferences(user)
            if stored is not None:
                prefs = prefs.merged(stored.model_dump(exclude_unset=True))
        return prefs.merged(given) if given is not None else prefs

    def learner_for(self, user: str | None = None, preferences: UserPreferences | None = None) -> PreferenceLearner:
        """The user's learner (saved state, else a cold start from `preferences` and the prior)."""
        from models.personalization.storage import learner_dir

        prefs = preferences if preferences is not None else self.preferences_for(user)
        if user is not None:
            folder = learner_dir(user, self.name)
            if (folder / "learner.json").exists():
                learner = PreferenceLearner.load(folder)
                return self._with_explicit(learner, prefs)
        return PreferenceLearner.cold_start(
            prefs,
            self.params.seed,
            prior=self.prior,
            learning_rate=self.params.learning_rate,
            adaptation_rate=self.params.adaptation_rate,
        )

    def _with_explicit(self, learner: PreferenceLearner, prefs: UserPreferences) -> PreferenceLearner:
        """A saved learner, with the strength of what the user states now kept at least explicit."""
        from models.personalization.features import SCALAR_FEATURES
        from models.personalization.learner import EXPLICIT_STRENGTH

        for key in prefs.targets():
            i = SCALAR_FEATURES.index(key)
            learner.w_quad[i] = max(learner.w_quad[i], EXPLICIT_STRENGTH)
        learner.learning_rate = self.params.learning_rate
        learner.adaptation_rate = self.params.adaptation_rate
        return learner

    def save_learner(self, user: str, learner: PreferenceLearner) -> Path:
        from models.personalization.storage import learner_dir

        return learner.save(learner_dir(user, self.name), user_data=True)

    # --- adaptation ----------------------------------------------------------------------

    @generating
    def rewrites(self, base: str, prefs: UserPreferences) -> list[str]:
        """Free rewrites from the configured rewriter model (none without one)."""
        if not self.params.rewriter or self.params.rewrites == 0:
            return []
        model = self._rewriter_model()
        wanted = "; ".join(prefs.instructions()) or "Keep it as it is."
        out = []
        for i in range(self.params.rewrites):
            messages = [
                {
                    "role": "system",
                    "content": f"Rewrite the message for the user. {wanted} Keep every name and number.",
                },
                {"role": "user", "content": base},
            ]
            out.append(model.chat(messages, max(16, len(base) // 2), seed=self.params.seed + i))
        return out

    def _rewriter_model(self) -> Any:
        with self._lock:
            if self._rewriter is None:
                ref = self.params.rewriter or ""
                manager = self._manager
                if "/" in ref and manager is not None and not Path(ref).exists():
                    category, name = ref.split("/", 1)
                    self._rewriter = manager.load_model(category, name)
                else:
                    from models.transformer_model import TransformerModel

                    self._rewriter = TransformerModel(ref)
            return self._rewriter

    def rank(
        self,
        texts: list[str],
        prefs: UserPreferences,
        user: str | None = None,
        context: str | None = None,
        learner: PreferenceLearner | None = None,
    ) -> list[float]:
        learner = learner or self.learner_for(user, prefs)
        return [learner.score(t, context) for t in texts]

    @generating
    def adapt_response(
        self,
        base_response: str,
        user_preferences: UserPreferences | dict[str, Any] | None = None,
        *,
        user: str | None = None,
        context: str | None = None,
        log: bool | None = None,
    ) -> AdaptedResponse:
        """`base_response` turned into the version this user will like best: the base and its
        meaning-preserving rewrites, scored by the user's learner; the best is returned."""
        t0 = time.perf_counter()
        if not isinstance(base_response, str):
            raise DataError(f"base_response: expected a string, got {type(base_response).__name__}")
        prefs = self.preferences_for(user, user_preferences)
        pool = rewrite_candidates(base_response, prefs, extra=self.rewrites(base_response, prefs))
        learner = self.learner_for(user, prefs)
        scores = [learner.score(t, context) for t in pool]
        best = max(range(len(pool)), key=lambda i: (scores[i], -i))
        t1 = time.perf_counter()
        response_id = None
        if self.params.log_responses if log is None else log:
            from models.personalization.storage import log_response

            response_id = log_response(
                user=user,
                category="personalization",
                model=self.name,
                version=self.version,
                personalization=self.name,
                context=context,
                text=pool[best],
                candidates=pool,
                scores=scores,
                chosen=best,
                background=True,
            )
        return AdaptedResponse(
            pool[best],
            base=base_response,
            score=scores[best],
            candidates=pool,
            scores=scores,
            chosen=best,
            response_id=response_id,
            preferences=prefs.explicit(),
            timings={"adapt_ms": round((t1 - t0) * 1000, 3), "total_ms": round((time.perf_counter() - t0) * 1000, 3)},
        )

    @generating
    def adapt(
        self, base_response: str, user_preferences: UserPreferences | dict[str, Any] | None = None, **kwargs: Any
    ) -> AdaptedResponse:
        """Same as `adapt_response` (the seed's `AdaptiveModel.adapt`)."""
        return self.adapt_response(base_response, user_preferences, **kwargs)

    def record_feedback(self, response_id: str, **feedback: Any) -> Any:
        """Record feedback on one of this model's answers (see `models.personalization.record_feedback`)."""
        from models.personalization.feedback import record_feedback

        return record_feedback(response_id, model=self, **feedback)

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "personalization",
            "version": self.version,
            "folder": str(self.folder) if self.folder else None,
            "adapter": str(self.adapter) if self.adapter else None,
            "defaults": self.defaults.explicit(),
            "prior_profile": self.prior.profile(),
            "params": self.params.model_dump(),
        }

    def close(self) -> None:
        """Nothing to release (a rewriter model is shared through the manager)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, version={self.version!r})"


def _folder_of(request: LoadRequest) -> Path:
    folder = request.ref.folder
    if folder is None or not folder.is_dir():
        raise ModelNotFoundError(
            f"personalization {request.name!r}: path {request.entry.path!r} must be a folder with companion.json"
        )
    return folder


def load_personalization(manager: Any, request: LoadRequest) -> PersonalizationModel:
    """Loader of `type: personalization` entries."""
    params = request.params
    if not isinstance(params, PersonalizationParams):
        raise PreferenceError([f"parameters: expected personalization parameters, got {type(params).__name__}"])
    return PersonalizationModel(
        _folder_of(request), name=request.name, params=params, version=request.ref.version, manager=manager
    )


def load_personalization_model(name: str, manager: Any = None) -> PersonalizationModel:
    """The personalization model `name` from the config (`user_prefs`, `user_preferences`, ...)."""
    from models.model_manager import default_manager as shared_manager

    manager = manager or shared_manager()
    model = manager.load_model("personalization", name)
    if not hasattr(model, "adapt_response"):
        raise ModelNotFoundError(
            f"personalization model {name!r} is a {type(model).__name__}, which cannot adapt responses; "
            "use type personalization, adaptive or hybrid"
        )
    return model


def write_builtin_folder(folder: str | Path) -> Path:
    """(Re)write the shipped `builtin/user_prefs` folder: no default preferences, the neutral prior.

    python -c "from models.personalization.model import write_builtin_folder as w; w('src/models/builtin/user_prefs')"
    """
    description = (
        "The built-in personalization model: no default preferences and the neutral population prior "
        "(models.personalization.learner._PRIOR_P); each user's own learner starts from it."
    )
    learner = PreferenceLearner.cold_start(None, seed=0)
    return write_personalization_folder(folder, None, learner, {"version": "1.0.0", "description": description})
