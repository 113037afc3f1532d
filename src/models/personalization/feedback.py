"""`record_feedback`: store what a user did with a personalized answer, and learn from it.

    r = hybrid.generate_personalized_response(message="...", user="sam", user_preferences=prefs)
    record_feedback(r.response_id, rating=+1)                  # thumbs up (or 1-5 stars)
    record_feedback(r.response_id, choice=2)                   # they preferred candidate 2
    record_feedback(r.response_id, regenerate=True)            # they asked for another answer
    record_feedback(r.response_id, edited_text="Their version")
    record_feedback(r.response_id, kept_over=["an earlier answer"])  # kept it over other swipes

Exactly one kind per call. The response must have been logged (`personalized_responses`);
an unknown id, a bad value or a user who is not the response's user raises `FeedbackError`
and stores nothing. Then, in order: the user's learner takes one step in memory, the row is
inserted into `feedback` (one transaction; the monitor reads it), and the learner's state is
saved (atomic files). A crash between the last two loses one learner step, never the row.
"""

from __future__ import annotations

from typing import Any

from models.personalization.events import FeedbackError, FeedbackEvent

__all__ = ["record_feedback"]


def _monitor_hash(user: str | None) -> str | None:
    try:
        from models.monitoring.events import pseudonymize
    except ImportError:  # pragma: no cover - monitoring is optional here
        return None
    return pseudonymize(user)


def _event(row: dict[str, Any], user: str | None, given: dict[str, Any], scale: str | None) -> FeedbackEvent:
    base = {"text": row["text"], "context": row.get("context"), "response_id": row["id"], "user": user}
    if given.get("rating") is not None:
        return FeedbackEvent.parse({**base, "kind": "rating", "rating": given["rating"], "scale": scale}, "rating")
    if given.get("choice") is not None:
        choice, cands = given["choice"], list(row["candidates"])
        if not isinstance(choice, int) or isinstance(choice, bool) or not 0 <= choice < len(cands):
            raise FeedbackError(f"choice: expected a candidate index 0..{len(cands) - 1}, got {choice!r}")
        rejected = [c for i, c in enumerate(cands) if i != choice]
        if not rejected:
            raise FeedbackError("choice: this response had a single candidate; rate it instead")
        return FeedbackEvent.parse({**base, "kind": "choice", "text": cands[choice], "rejected": rejected}, "choice")
    if given.get("kept_over") is not None:  # swipes: this answer was kept over others given in its place
        others = given["kept_over"]
        if not isinstance(others, list) or not others or not all(isinstance(t, str) and t.strip() for t in others):
            raise FeedbackError("kept_over: expected the texts of the other answers (a non-empty list of strings)")
        return FeedbackEvent.parse({**base, "kind": "choice", "rejected": list(others)}, "choice")
    if given.get("regenerate"):
        return FeedbackEvent.parse({**base, "kind": "regenerate"}, "regenerate")
    edited = given.get("edited_text")
    if not isinstance(edited, str) or not edited.strip():
        raise FeedbackError("edited_text: expected the user's edited version (a non-empty string)")
    return FeedbackEvent.parse({**base, "kind": "edit", "edited_text": edited}, "edit")


def _monitor_kind_value(event: FeedbackEvent) -> tuple[str, float | None]:
    """The kind and value as `models.monitoring.feedback` counts them."""
    if event.kind == "rating":
        return ("thumbs", float(event.rating or 0)) if event.scale == "thumbs" else ("rating", float(event.rating or 0))
    if event.kind == "edit":
        return "edit", round(event.edit_fraction, 6)
    return event.kind, None


def record_feedback(
    response_id: str,
    *,
    rating: float | None = None,
    choice: int | None = None,
    regenerate: bool = False,
    edited_text: str | None = None,
    kept_over: list[str] | None = None,
    user: str | None = None,
    comment: str | None = None,
    scale: str | None = None,
    model: Any = None,
) -> FeedbackEvent:
    """Record one piece of feedback on a logged response (see the module docstring)."""
    from models.personalization import storage

    given = {
        "rating": rating,
        "choice": choice,
        "regenerate": regenerate or None,
        "edited_text": edited_text,
        "kept_over": kept_over,
    }
    kinds = [k for k, v in given.items() if v is not None]
    if len(kinds) != 1:
        raise FeedbackError(
            f"give exactly one of rating, choice, regenerate, edited_text, kept_over (got {', '.join(kinds) or 'none'})"
        )
    row, user = _logged_response(response_id, user)
    event = _event(row, user, given, scale)
    if comment:
        event = event.model_copy(update={"meta": {"comment": str(comment)[:2000]}})
    personalization = model if model is not None else _load(row["personalization"])
    learner = None
    if user is not None:
        prefs = personalization.preferences_for(user)
        learner = personalization.learner_for(user, prefs)
        learner.update(event)
    storage.insert_feedback(_feedback_row(row, response_id, user, event))
    if learner is not None and user is not None:
        personalization.save_learner(user, learner)
        _store_profile(user, learner)
    return event


def _logged_response(response_id: str, user: str | None) -> tuple[dict[str, Any], str | None]:
    """The logged response feedback is about, and whose feedback it is (the caller, who must be
    its owner, or its owner)."""
    from models.personalization import storage

    if not isinstance(response_id, str) or not response_id:
        raise FeedbackError(f"response_id: expected the id of a logged response, got {response_id!r}")
    row = storage.get_response(response_id)
    if row is None:
        raise FeedbackError(f"response_id: no logged response {response_id!r} (feedback is only for logged answers)")
    owner = row.get("user_id")
    if user is not None and owner is not None and user != owner:
        raise FeedbackError(f"user: response {response_id!r} belongs to another user")
    return row, user or owner


def _feedback_row(row: dict[str, Any], response_id: str, user: str | None, event: FeedbackEvent) -> dict[str, Any]:
    """The feedback table's row: what monitoring counts, and the event itself."""
    from models.db import utc_now

    kind, value = _monitor_kind_value(event)
    return {
        "at": utc_now(),
        "category": row["category"],
        "model": row["model"],
        "version": row.get("version"),
        "kind": kind,
        "value": value,
        "user_hash": _monitor_hash(user),
        "user_id": user,
        "response_id": response_id,
        "personalization": row["personalization"],
        "event": event.model_dump(),
    }


def _load(name: str) -> Any:
    """The personalization model an answer was logged under (a hybrid's own part for hybrids)."""
    from models.gate import inside_checked_call
    from models.model_manager import default_manager as shared_manager

    # The caller owns the answer (checked in `record_feedback`): a user may always rate their own
    # answers, whatever they may read. Loading the model that learns from it is part of that.
    with inside_checked_call():
        model = shared_manager().load_model("personalization", name)
    return getattr(model, "personalization", model)


def _store_profile(user: str, learner: Any) -> None:
    """Keep the learned profile in the user's stored preferences (`learned`)."""
    from models.personalization.preferences import update_preferences

    profile = learner.profile()
    update_preferences(user, lambda prefs: prefs.model_copy(update={"learned": profile}))
