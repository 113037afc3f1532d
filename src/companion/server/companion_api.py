"""Our endpoints: feedback, the caller's preferences and memory, versions and rollback,
updates, the monitor's figures and `/metrics`. Thin over the library; its errors become 4xx
bodies in `companion.server.errors`. Admin routes are decided by the security policy
(`admin` on the model, or on `*` for updates), never by the server.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from companion.server.app import caller
from companion.server.errors import APIError
from companion.server.schemas import FeedbackRequest, MemoryFactIn, PreferencesIn, RollbackRequest

__all__ = ["router"]

router = APIRouter(tags=["companion"])
FactId = Annotated[int, Path(ge=1, le=2**53, description="A remembered fact's id.")]


async def _as(user: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run library code in a worker thread as `user`."""
    from models.security import acting_as

    def call() -> Any:
        with acting_as(user):
            return fn(*args, **kwargs)

    return await run_in_threadpool(call)


def _model_ref(category: str, name: str) -> str:
    if not category.isidentifier() or "/" in name:
        raise APIError(404, f"no model {category}/{name}", code="model_not_found")
    return f"{category}/{name}"


# ----------------------------------------------------------------------------- who am I


@router.get("/api/me", summary="The caller: user id, whether admin, the server's auth mode")
async def me(request: Request, user: str = Depends(caller)) -> dict[str, Any]:
    from models.security import get_security_manager

    def read() -> dict[str, Any]:
        admin = get_security_manager().decide(user, "*", "admin").allowed
        return {"user": user, "admin": admin, "mode": request.app.state.companion.settings.mode}

    return await _as(user, read)


# ----------------------------------------------------------------------------- feedback


@router.post("/api/feedback", summary="Feedback on an answer (its response_id): rating, choice, regenerate or edit")
async def feedback(body: FeedbackRequest, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import record_feedback
    from models.personalization.storage import get_response

    def record() -> dict[str, Any]:
        row = get_response(body.response_id)
        if row is None or (row.get("user_id") is not None and row.get("user_id") != user):
            raise APIError(404, f"no answer {body.response_id!r} of yours", param="response_id")
        scale = "stars" if body.stars else ("thumbs" if body.rating is not None else None)
        event = record_feedback(
            body.response_id,
            rating=body.rating,
            scale=scale,
            choice=body.choice,
            regenerate=body.regenerate,
            edited_text=body.edited_text,
            comment=body.comment,
            user=user,
        )
        return {"recorded": event.kind, "response_id": body.response_id, "model": f"{row['category']}/{row['model']}"}

    return await _as(user, record)


# ----------------------------------------------------------------------------- preferences, memory


@router.get("/api/me/preferences", summary="The caller's stated and learned preferences")
async def get_preferences(user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import load_preferences

    def read() -> dict[str, Any]:
        prefs = load_preferences(user)
        return {
            "user": user,
            "preferences": prefs.explicit() if prefs else {},
            "learned": prefs.learned if prefs else {},
        }

    return await _as(user, read)


@router.put("/api/me/preferences", summary="Merge stated preferences (validated: a bad value changes nothing)")
async def put_preferences(body: PreferencesIn, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import update_preferences

    def write() -> dict[str, Any]:
        saved = update_preferences(user, lambda current: current.merged(body.preferences))
        return {"user": user, "preferences": saved.explicit(), "learned": saved.learned}

    return await _as(user, write)


@router.get("/api/me/memory", summary="What the companion remembers about the caller")
async def get_memory(user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import UserMemory

    return await _as(user, lambda: {"user": user, "facts": [f.to_dict() for f in UserMemory(user).list()]})


@router.post("/api/me/memory", summary="Remember a fact about the caller")
async def add_memory(body: MemoryFactIn, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import UserMemory

    def add() -> dict[str, Any]:
        mem = UserMemory(user)
        return mem.get(mem.add(body.text, kind=body.kind)).to_dict()

    return await _as(user, add)


@router.put("/api/me/memory/{fact_id}", summary="Change a remembered fact")
async def edit_memory(fact_id: FactId, body: MemoryFactIn, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import UserMemory

    return await _as(user, lambda: UserMemory(user).edit(fact_id, body.text, kind=body.kind).to_dict())


@router.delete("/api/me/memory/{fact_id}", summary="Forget a remembered fact")
async def delete_memory(fact_id: FactId, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personalization import UserMemory

    def remove() -> dict[str, Any]:
        UserMemory(user).remove(fact_id)
        return {"deleted": fact_id}

    return await _as(user, remove)


# ----------------------------------------------------------------------------- personalities


@router.get("/api/personalities/{name}", summary="A personality's emotion labels and scenarios (what chat can ask for)")
async def personality(name: str, request: Request, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personality.macros import expand_macros
    from models.security import require

    ref = _model_ref("personality", name)

    def read() -> dict[str, Any]:
        require(user, ref, "read", action="info")
        model = request.app.state.companion.runner.get_manager().load_model("personality", name)
        if not hasattr(model, "contexts"):
            raise APIError(404, f"{ref} is not a card-driven personality", code="model_not_found")
        scenarios = model.ext.scenarios
        return {
            "model": ref,
            "character": model.character,
            "labels": model.labels,
            "contexts": {key: scenarios[key].description for key in model.contexts()},
            "emotion_control": model.control,
            "emotion_steering": model.info()["emotion_steering"],
            "greetings": model.greetings(user),
            "avatar": f"/api/personalities/{name}/avatar",
            "description": expand_macros(model.card.description, char=model.character, user=model.user_name(user)),
        }

    return await _as(user, read)


@router.get("/api/personalities/{name}/state", summary="The character's emotional state with the caller")
async def personality_state(name: str, request: Request, user: str = Depends(caller)) -> dict[str, Any]:
    from models.personality.sessions import restore
    from models.security import require

    ref = _model_ref("personality", name)

    def read() -> dict[str, Any]:
        require(user, ref, "read", action="state")
        model = request.app.state.companion.runner.get_manager().load_model("personality", name)
        if not hasattr(model, "session"):
            raise APIError(404, f"{ref} is not a card-driven personality", code="model_not_found")
        session = model.session(user)
        restore(session, ref, user, model.ext.scenarios)  # as the last turn left it, on any replica
        return {
            "model": ref,
            "emotion": session.state.emotion,
            "values": session.state.to_dict(),
            "context": session.context,
            "turn": session.turn,
        }

    return await _as(user, read)


# ----------------------------------------------------------------------------- versions, updates


@router.get("/api/models/{category}/{name}/versions", summary="A model's versions, aliases and alias history")
async def versions(category: str, name: str, user: str = Depends(caller)) -> dict[str, Any]:
    from models.lifecycle.version_control import ModelVersionControl
    from models.security import require

    ref = _model_ref(category, name)

    def read() -> dict[str, Any]:
        require(user, ref, "read", action="versions")
        vc = ModelVersionControl(user=user)
        return {
            "model": ref,
            "versions": [v.to_json() for v in vc.list_versions(name, category=category)],
            "aliases": vc.aliases(name, category=category),
            "history": [asdict(m) for m in vc.alias_history(name, category=category)],
        }

    return await _as(user, read)


@router.post("/api/models/{category}/{name}/rollback", summary="Move an alias back (admin on the model)")
async def rollback(category: str, name: str, body: RollbackRequest, user: str = Depends(caller)) -> dict[str, Any]:
    from models.lifecycle.version_control import ModelVersionControl

    ref = _model_ref(category, name)

    def move() -> dict[str, Any]:
        result = ModelVersionControl(user=user).rollback_version(
            name, body.version, alias=body.alias, reason=body.reason, category=category
        )
        if not result:
            raise APIError(409, f"rollback of {ref} refused: {result.reason}", param="version")
        return result.to_json()

    return await _as(user, move)


@router.get("/api/updates", summary="Updates offered by the configured catalogs (admin on *)")
async def updates(user: str = Depends(caller)) -> dict[str, Any]:
    from models.lifecycle.update_manager import ModelUpdateManager
    from models.security import require

    def check() -> dict[str, Any]:
        require(user, "*", "admin", action="updates:check")
        found = ModelUpdateManager(user=user, progress=False).check_updates()
        return {
            "updates": [u.to_json() for u in found],
            "refused": [{"source": s, "reason": r} for s, r in found.refused],
        }

    return await _as(user, check)


# ----------------------------------------------------------------------------- monitor, metrics


@router.get("/api/monitor/{category}/{name}", summary="The monitor's figures for a model, and a series for charts")
async def monitor(
    category: str,
    name: str,
    user: str = Depends(caller),
    period: str = Query("last_24_hours", max_length=64),
    buckets: int = Query(24, ge=1, le=200),
) -> dict[str, Any]:
    from models.monitoring.monitor import ModelPerformanceMonitor
    from models.security import require

    ref = _model_ref(category, name)

    def read() -> dict[str, Any]:
        require(user, ref, "read", action="monitor")
        mon = ModelPerformanceMonitor()
        try:
            metrics = mon.get_performance_metrics(name, period, category=category)
            series = mon.series(name, period, buckets=buckets, category=category)
        except ValueError as exc:  # a bad period names itself
            raise APIError(400, str(exc), param="period") from None
        return {"metrics": metrics, "series": series}

    return await _as(user, read)


@router.get(
    "/metrics",
    summary="Prometheus exposition of the monitor's metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(user: str = Depends(caller)) -> Response:
    from models.monitoring.prometheus import CONTENT_TYPE, exposition
    from models.security import get_security_manager

    security = get_security_manager()
    seen: dict[tuple[str, str], bool] = {}

    def visible(category: str, model: str) -> bool:  # only series of models this caller may read
        key = (category, model)
        if key not in seen:
            seen[key] = bool(security.decide(user, f"{category}/{model}", "read").allowed)
        return seen[key]

    body = await run_in_threadpool(exposition, True, visible)
    return Response(body, media_type=CONTENT_TYPE)
