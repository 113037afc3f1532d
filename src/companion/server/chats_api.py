"""Saved chats over HTTP (the web page's conversations) and card import.

    GET    /api/chats[?model=luna]                 the caller's chats, most recent first
    POST   /api/chats                              a new chat with a model, greeted by its card
    GET    /api/chats/{id}                         one chat, every message and swipe
    PATCH  /api/chats/{id}                         rename
    DELETE /api/chats/{id}
    POST   /api/chats/{id}/messages                send a message; the answer streams (SSE) or returns
    POST   /api/chats/{id}/regenerate              another answer to the last message (a new swipe)
    POST   /api/chats/{id}/continue                more of the last answer
    PUT    /api/chats/{id}/messages/{position}     edit a message's text, or choose which swipe shows
    GET    /api/chats/{id}/export?format=json|sillytavern
    POST   /api/chats/import                       our JSON or SillyTavern JSONL
    POST   /api/cards?filename=NAME.png            import a character card (admin on the personality)
    GET    /api/personalities/{name}/avatar        the card's image

Answers run as every other answer does (the runner's queue, the per-user limits, the model's
access check, the response log for feedback); `models.chats.Conversation` plans and records
them, as in the CLI. A stream is `data: {"delta": "..."}` events, then `data: {"done": true,
"message": {...}, "companion": {...}}`; an error mid-stream is `data: {"error": {...}}`.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from companion.server.app import caller
from companion.server.companion_api import _as
from companion.server.errors import APIError

__all__ = ["router"]

router = APIRouter(tags=["chats"])
ChatId = Annotated[str, Field(min_length=1, max_length=32)]


class NewChat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., min_length=1, max_length=200, description="A model id from GET /v1/models.")
    title: str | None = Field(None, max_length=200)
    greeting: int | None = Field(None, ge=0, le=64, description="Which of the card's greetings opens the chat.")
    context: str | None = Field(None, max_length=64, description="A scenario of the card (its greeting first).")


class Rename(BaseModel):
    title: str = Field(..., min_length=1, max_length=200)


class Reply(BaseModel):
    """Options of one answer (the message itself for /messages)."""

    model_config = ConfigDict(extra="forbid")

    content: str | None = Field(None, max_length=20000, description="/messages: the user's message.")
    images: list[str] | None = Field(
        None, max_length=4, description="/messages: images sent with it (data:image/...;base64, URLs; vision models)."
    )
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    emotion: str | None = Field(None, max_length=64, description="Answer in this emotional state (personalities).")
    context: str | None = Field(None, max_length=64, description="A scenario key of the card (personalities).")


class EditMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str | None = Field(None, max_length=100_000, description="The new text of the shown answer.")
    swipe_id: int | None = Field(None, ge=0, description="Show this answer instead.")


class ImportChat(BaseModel):
    text: str = Field(..., min_length=1, description="The file's content: our JSON or SillyTavern JSONL.")
    model: str | None = Field(None, max_length=200, description="The model it continues with (default: by name).")


def _state(request: Request) -> Any:
    return request.app.state.companion


def _store(user: str) -> Any:
    from models.chats import ChatStore

    return ChatStore(user)


def _check_model(request: Request, user: str, model_id: str, level: str = "read") -> tuple[str, str]:
    """CATEGORY/NAME of a model the caller may use (404 for one they may not see)."""
    from models.errors import AccessDenied
    from models.security import require

    category, name = _state(request).runner.resolve(model_id)
    try:
        require(user, f"{category}/{name}", level, action=f"chats:{level}")
    except AccessDenied:
        if level != "read":
            raise
        raise APIError(
            404, f"no model {model_id!r} you may use (GET /v1/models lists them)", code="model_not_found"
        ) from None
    return category, name


# ----------------------------------------------------------------------------- chats


@router.get("/api/chats", summary="The caller's saved chats, most recent first")
async def list_chats(user: str = Depends(caller), model: str | None = Query(None, max_length=200)) -> dict[str, Any]:
    return await _as(user, lambda: {"chats": [c.to_dict() for c in _store(user).list(model)]})


@router.post("/api/chats", summary="Start a chat with a model (a personality greets with its card)")
async def new_chat(body: NewChat, request: Request, user: str = Depends(caller)) -> dict[str, Any]:
    def create() -> dict[str, Any]:
        category, name = _check_model(request, user, body.model)
        model = _state(request).runner.get_manager().load_model(category, name)
        greetings: list[str] = []
        index = body.greeting or 0
        meta: dict[str, Any] = {}
        if hasattr(model, "greetings"):
            greetings = model.greetings(user, body.context)
            meta = {"character": model.character}
            if body.greeting is None and greetings:
                shown = model.greeting(user, body.context)
                index = greetings.index(shown) if shown in greetings else 0
        if body.context:
            meta["context"] = body.context
        chat = _store(user).create(
            f"{category}/{name}", title=body.title, greeting=greetings or None, greeting_index=index, meta=meta
        )
        return chat.to_dict()

    return await _as(user, create)


@router.get("/api/chats/{chat_id}", summary="A chat with every message and swipe")
async def get_chat(chat_id: ChatId, user: str = Depends(caller)) -> dict[str, Any]:
    return await _as(user, lambda: _store(user).get(chat_id).to_dict())


@router.patch("/api/chats/{chat_id}", summary="Rename a chat")
async def rename_chat(chat_id: ChatId, body: Rename, user: str = Depends(caller)) -> dict[str, Any]:
    return await _as(user, lambda: _store(user).rename(chat_id, body.title).to_dict())


@router.delete("/api/chats/{chat_id}", summary="Delete a chat")
async def delete_chat(chat_id: ChatId, user: str = Depends(caller)) -> dict[str, Any]:
    def remove() -> dict[str, Any]:
        _store(user).delete(chat_id)
        return {"deleted": chat_id}

    return await _as(user, remove)


@router.put("/api/chats/{chat_id}/messages/{position}", summary="Edit a message, or choose the swipe shown")
async def edit_message(
    chat_id: ChatId, position: int, body: EditMessage, user: str = Depends(caller)
) -> dict[str, Any]:
    from models.chats import Conversation

    if (body.content is None) == (body.swipe_id is None):
        raise APIError(400, "give exactly one of content (an edit) or swipe_id (which answer shows)")

    def change() -> dict[str, Any]:
        store = _store(user)
        chat = store.get(chat_id)
        if body.swipe_id is not None:
            return store.select_swipe(chat_id, position, body.swipe_id).to_dict()
        return Conversation(store, chat, None).edit(position, body.content or "").to_dict()

    return await _as(user, change)


# ----------------------------------------------------------------------------- answers


def _reply_job(user: str, chat_id: str, action: str, body: Reply, personalization: str | None) -> Any:
    """A runner job: plan the answer on the stored chat, generate it as `/v1` does, record it."""
    from companion.server.generation import Turn
    from companion.server.turns import chat_job

    opts: dict[str, Any] = {"max_length": body.max_tokens}
    for key in ("temperature", "top_p", "seed"):
        if getattr(body, key) is not None:
            opts[key] = getattr(body, key)
    if body.emotion is not None:
        opts["emotional_state"] = body.emotion
    if body.context is not None:
        opts["context"] = body.context

    def job(model: Any, category: str, name: str) -> Turn:
        from models.chats import Conversation

        store = _store(user)
        conv = Conversation(store, store.get(chat_id), model)
        kw = dict(opts)
        if action == "send":  # the job checks the message (images on a text model: 400) before it is stored
            message = {"role": "user", "content": body.content or "", **_image_parts(body.images)}
            inner = chat_job(user, None, [*conv.chat.history(), message], kw, personalization)(model, category, name)
            plan = conv.plan("send", body.content, images=body.images)
        else:
            plan = conv.plan(action, body.content)
            messages = [*plan.history, {"role": "user", "content": plan.message}]
            if plan.partial is not None:
                if category == "personality" and all(m["role"] != "system" for m in messages):
                    kw["partial"] = plan.partial
                else:
                    messages.append({"role": "assistant", "content": plan.partial})
                    kw["continue_final"] = True
            inner = chat_job(user, None, messages, kw, personalization)(model, category, name)

        def finish(text: str) -> dict[str, Any]:
            meta = inner.finish(text)
            answer = meta["text"] if plan.partial is not None else meta["text"].strip()
            msg = conv.record(plan, answer, response_id=meta.get("response_id"), emotion=meta.get("emotion"))
            meta.update(message=msg.to_dict(), chat_id=chat_id)
            return meta

        return Turn(inner.pieces, finish)

    return job


def _image_parts(images: list[str] | None) -> dict[str, Any]:
    """A message's `images` key as the server's chat path takes it (OpenAI image_url parts)."""
    if not images:
        return {}
    for i, url in enumerate(images):
        if not url.startswith("data:image/") or ";base64," not in url or len(url) > 8_000_000:
            raise APIError(400, "images: data:image/...;base64, URLs of at most 8 MB", param=f"images.{i}")
    return {"images": [{"type": "image_url", "image_url": {"url": url}} for url in images]}


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def _done(meta: dict[str, Any]) -> dict[str, Any]:
    companion = {k: meta.get(k) for k in ("response_id", "emotion", "detected_emotion")}
    usage = {k: meta.get(k) for k in ("prompt_tokens", "completion_tokens")}
    return {"done": True, "message": meta["message"], "companion": companion, "usage": usage,
            "finish_reason": meta.get("finish_reason")}  # fmt: skip


async def _answer(request: Request, user: str, chat_id: str, action: str, body: Reply) -> Any:
    state = _state(request)
    limits = state.settings.limits
    if body.max_tokens is not None and body.max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is at most {limits.max_tokens} on this server", param="max_tokens")
    chat = await _as(user, lambda: _store(user).get(chat_id))
    await _as(user, lambda: _check_model(request, user, chat.model, "generate"))
    job = _reply_job(user, chat_id, action, body, state.settings.personalization)
    if not body.stream:
        from companion.server.openai_api import _collect

        state.open_request(user)
        try:
            meta = await _collect(request, state.runner.run(user, chat.model, job))
        finally:
            state.close_request(user)
        return _done(meta)
    state.open_stream(user)
    try:
        events = state.runner.run(user, chat.model, job)
        await events.__anext__()  # errors before any output are ordinary HTTP errors
    except BaseException:
        state.close_stream(user)
        raise

    async def stream() -> AsyncIterator[bytes]:
        try:
            async for kind, value in events:
                if kind == "piece":
                    yield _sse({"delta": value})
                elif kind == "done":
                    yield _sse(_done(value))
        except Exception as exc:
            from companion.server.errors import error_body, status_of
            from models.errors import CompanionError

            status = status_of(exc)[0] if isinstance(exc, CompanionError) else 500
            yield _sse(error_body(status, str(exc) or type(exc).__name__))
        finally:
            await events.aclose()
            state.close_stream(user)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.post("/api/chats/{chat_id}/messages", summary="Send a message; the answer streams (stream=true) or returns")
async def send_message(chat_id: ChatId, body: Reply, request: Request, user: str = Depends(caller)) -> Any:
    if not body.content or not body.content.strip():
        raise APIError(400, "content: the message to send", param="content")
    return await _answer(request, user, chat_id, "send", body)


@router.post("/api/chats/{chat_id}/regenerate", summary="Another answer to the last message (kept as a swipe)")
async def regenerate(chat_id: ChatId, body: Reply, request: Request, user: str = Depends(caller)) -> Any:
    return await _answer(request, user, chat_id, "regenerate", body)


@router.post("/api/chats/{chat_id}/continue", summary="More of the last answer")
async def continue_answer(chat_id: ChatId, body: Reply, request: Request, user: str = Depends(caller)) -> Any:
    return await _answer(request, user, chat_id, "continue", body)


# ----------------------------------------------------------------------------- files


@router.get("/api/chats/{chat_id}/export", summary="A chat as our JSON or SillyTavern JSONL (a download)")
async def export_chat(
    chat_id: ChatId, user: str = Depends(caller), format: Literal["json", "sillytavern"] = "json"
) -> Response:
    from models.chats import to_json, to_sillytavern

    chat = await _as(user, lambda: _store(user).get(chat_id))
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in chat.title)[:60].strip("-") or chat.id
    if format == "json":
        body, kind, name = json.dumps(to_json(chat), indent=1, ensure_ascii=False), "application/json", f"{stem}.json"
    else:
        body, kind, name = to_sillytavern(chat, user_name=user), "application/jsonl", f"{stem}.jsonl"
    return Response(body, media_type=kind, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/api/chats/import", summary="Import a chat (our JSON or SillyTavern JSONL)")
async def import_chat(body: ImportChat, request: Request, user: str = Depends(caller)) -> dict[str, Any]:
    from models.chats.formats import read_chat
    from models.errors import ChatError

    def load() -> dict[str, Any]:
        draft = read_chat(body.text)
        ref = body.model or draft.model or str(draft.meta.get("character") or "").lower()
        if not ref:
            raise ChatError("which model continues this chat? give model")
        category, name = _check_model(request, user, ref)
        return _store(user).create(f"{category}/{name}", **draft.kwargs()).to_dict()

    return await _as(user, load)


SUFFIXES = (".png", ".apng", ".json", ".charx")


@router.post("/api/cards", summary="Import a character card (PNG, JSON or CHARX) as a personality")
async def import_card(
    request: Request,
    user: str = Depends(caller),
    filename: str = Query(..., min_length=1, max_length=200, description="The file's name (its suffix says the kind)."),
    name: str | None = Query(None, max_length=64, description="Personality name (default: from the character)."),
    replace: bool = Query(False, description="Replace a personality of the same name (a new version of it)."),
) -> dict[str, Any]:
    """The same validation as `companion cards import`; the request body is the file."""
    from models.errors import CardError, ConfigError

    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise APIError(400, f"filename: a card is {', '.join(SUFFIXES)}, not {suffix or 'no suffix'}", param="filename")
    data = await request.body()
    if not data:
        raise APIError(400, "the request body is the card file; it was empty")

    def install() -> dict[str, Any]:
        from models.personality.card import load_card
        from models.personality.install import import_card as install_card
        from models.personality.install import slug
        from models.security import require
        from models.store import validate_name

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"card{suffix}"
            path.write_bytes(data)
            try:
                card = load_card(path)  # the CLI's validation: each problem names the field
            except CardError as exc:
                raise APIError(400, str(exc).replace(str(path), Path(filename).name), param="body") from None
            model_name = validate_name(name or slug(card.name))
            require(user, f"personality/{model_name}", "admin", action="cards:import")
            try:
                info = install_card(path, name=model_name, force=replace)
            except ConfigError as exc:
                problem = exc.problems[0] if exc.problems else str(exc)
                raise APIError(409, f"{problem}; send replace=true to replace it") from None
        return {"model": info["name"], "version": info["version"], "character": card.name}

    return await _as(user, install)


@router.get(
    "/api/personalities/{name}/avatar",
    summary="The character's image (the card's PNG, or a drawn one)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
async def avatar(name: str, request: Request, user: str = Depends(caller)) -> Response:
    from models.personality.container import default_avatar

    def read() -> bytes:
        category, model_name = _check_model(request, user, f"personality/{name}")
        model = _state(request).runner.get_manager().load_model(category, model_name)
        card = getattr(model, "card", None)
        if card is None:
            raise APIError(404, f"{name} is not a card-driven personality", code="model_not_found")
        return card.image or default_avatar(card.name)

    image = await _as(user, read)
    return Response(image, media_type="image/png", headers={"Cache-Control": "max-age=60"})
