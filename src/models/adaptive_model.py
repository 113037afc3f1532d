"""`AdaptiveModel`: a personalization model opened from a path, with its learning rates.

    from models.adaptive_model import AdaptiveModel

    model = AdaptiveModel(model_path="models/personalization/user_adaptive", learning_rate=0.001)
    adapted_response = model.adapt(base_response="Hello there!", user_preferences=user_prefs)

`model_path` is anything a model path can be (`models/personalization/<name>` names a store or
config model; a folder with `companion.json` of kind `personalization`). It is a
`PersonalizationModel` (see `models.personalization.model`): `adapt` = `adapt_response`, and
feedback (`record_feedback`) trains the user's learner with `learning_rate` and
`adaptation_rate`. Config entries of `type: adaptive` load as this class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from models.errors import ModelNotFoundError
from models.model_manager import resolve_path
from models.paths import classify_path, name_candidates
from models.personality.loader import shared_manager
from models.personalization.model import PersonalizationModel
from models.personalization.params import PersonalizationParams
from models.registry import LoadRequest

__all__ = ["AdaptiveModel"]


class AdaptiveModel(PersonalizationModel):
    """A personalization model with explicit `learning_rate` / `adaptation_rate`."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        learning_rate: float | None = None,
        adaptation_rate: float | None = None,
        *,
        name: str | None = None,
        params: PersonalizationParams | None = None,
        version: str | None = None,
        manager: Any = None,
        **parameters: Any,
    ) -> None:
        folder, found_name, found_version, entry_params = _resolve(model_path)
        merged = {**entry_params, **(params.model_dump(exclude_unset=True) if params else {}), **parameters}
        if learning_rate is not None:
            merged["learning_rate"] = learning_rate
        if adaptation_rate is not None:
            merged["adaptation_rate"] = adaptation_rate
        typed = PersonalizationParams.model_validate(merged)
        super().__init__(
            folder,
            name=name or found_name,
            params=typed,
            version=version or found_version,
            manager=manager,
        )
        self.model_path = str(model_path) if model_path is not None else None

    @property
    def learning_rate(self) -> float:
        return self.params.learning_rate

    @property
    def adaptation_rate(self) -> float:
        return self.params.adaptation_rate


def _resolve(model_path: str | Path | None) -> tuple[Path | None, str, str | None, dict[str, Any]]:
    """`(folder, name, version, the config entry's parameters)` for a model path."""
    if model_path is None:
        return None, "adaptive", None, {}

    ref = resolve_path(str(model_path))
    if ref.folder is None:
        raise ModelNotFoundError(f"{model_path!r}: a personalization model must be a folder (got {ref.kind})")
    entry_params: dict[str, Any] = {}
    raw = classify_path(str(model_path))
    name = ref.name or Path(str(model_path)).name
    if raw.kind == "store" and raw.category and raw.name:
        config = shared_manager().config
        for cand in name_candidates(raw.name, raw.category):
            entry = config.entry(raw.category, cand)
            if entry is not None:
                entry_params = {k: v for k, v in entry.parameters.items() if k in PersonalizationParams.model_fields}
                name = cand
                break
    return ref.folder, name, ref.version, entry_params


def load_adaptive(manager: Any, request: LoadRequest) -> AdaptiveModel:
    """Loader of `type: adaptive` entries (the seed's `user_prefs`)."""
    folder = request.ref.folder
    if folder is None or not folder.is_dir():
        raise ModelNotFoundError(
            f"adaptive model {request.name!r}: path {request.entry.path!r} must be a folder with companion.json"
        )
    params = request.params
    if not isinstance(params, PersonalizationParams):
        params = PersonalizationParams.model_validate(request.entry.parameters)
    model = AdaptiveModel.__new__(AdaptiveModel)
    PersonalizationModel.__init__(
        model, folder, name=request.name, params=params, version=request.ref.version, manager=manager
    )
    model.model_path = request.entry.path
    return model
