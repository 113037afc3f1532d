"""The OpenAI-compatible endpoints: `/v1/models`, `/v1/chat/completions`, `/v1/completions`.

HTTP only: requests are checked against the server's limits here, the work of an answer is in
`companion.server.turns` (a personality's card-driven prompt when the client sends only user
turns, the client's own prompt when it sends a system message), and runs in
`companion.server.generation`'s worker threads. Every answer's `response_id` (for
`/api/feedback`) and emotion are in each choice, and in the last chunk of a stream, under the
extension key `companion`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from companion.server.app import caller
from companion.server.errors import APIError
from companion.server.generation import SERVED
from companion.server.requests import chat_logprobs, chat_messages, completion_logprobs, encodable, sampling_options
from companion.server.schemas import ChatRequest, CompletionRequest
from companion.server.turns import chat_job, completion_job

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"])
DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


def _state(request: Request) -> Any:
    return request.app.state.companion


# ----------------------------------------------------------------------------- models


@router.get("/models", summary="Models (each personality and base model) this user may use")
def list_models(request: Request, user: str = Depends(caller)) -> dict[str, Any]:
    from models.security import acting_as, get_security_manager

    state = _state(request)
    security = get_security_manager()
    data = []
    with acting_as(user):
        for info in state.runner.get_manager().list_models():
            if info.category not in SERVED:
                continue
            if not security.decide(user, f"{info.category}/{info.name}", "read").allowed:
                continue
            data.append(
                {
                    "id": info.name,
                    "object": "model",
                    "created": state.started,
                    "owned_by": "companion",
                    "category": info.category,
                    "description": info.description,
                }
            )
    return {"object": "list", "data": data}


# ----------------------------------------------------------------------------- helpers


def _seed(seed: int | None) -> dict[str, Any]:
    return {} if seed is None else {"seed": seed}


def _companion(meta: dict[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("response_id", "emotion", "detected_emotion", "prompt")}


def _message(meta: dict[str, Any]) -> dict[str, Any]:
    """The assistant message of a finished answer: its text, or its tool calls."""
    if meta.get("tool_calls"):
        return {"role": "assistant", "content": meta["text"] or None, "tool_calls": meta["tool_calls"]}
    return {"role": "assistant", "content": meta["text"]}


def _lp(logprobs: dict[str, Any] | None) -> dict[str, Any]:
    """A stream's last chunk of a choice carries all its tokens' logprobs (when asked for)."""
    return {"logprobs": logprobs} if logprobs is not None else {}


def _sse(data: dict[str, Any] | str) -> bytes:
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {body}\n\n".encode()


async def _collect(request: Request, events: AsyncIterator[tuple[str, Any]]) -> dict[str, Any]:
    """The finished answer of a job; if the client goes away first, the job is cancelled."""

    async def consume() -> dict[str, Any]:
        async for kind, value in events:
            if kind == "done":
                return value
        raise RuntimeError("the generation ended without an answer")

    task = asyncio.ensure_future(consume())
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise APIError(400, "the client closed the connection", code="client_disconnected")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await events.aclose()


async def _first(events: AsyncIterator[tuple[str, Any]]) -> tuple[str, Any]:
    """The first event: errors before any output become ordinary HTTP errors."""
    return await events.__anext__()


# ----------------------------------------------------------------------------- chat


@router.post("/chat/completions", summary="Chat (OpenAI-compatible; stream=true for server-sent events)")
async def chat_completions(req: ChatRequest, request: Request, user: str = Depends(caller)) -> Any:
    state = _state(request)
    messages = chat_messages(req)
    opts = sampling_options(req, state.settings.limits)
    if req.companion is not None:
        if req.companion.emotion is not None:
            opts["emotional_state"] = req.companion.emotion
        if req.companion.context is not None:
            opts["context"] = req.companion.context
    created = int(time.time())
    cid = f"chatcmpl-{uuid.uuid4().hex}"

    def start(i: int) -> AsyncIterator[tuple[str, Any]]:
        """Choice i's generation (seed + i, as OpenAI's `n` with a seed)."""
        seed = None if req.seed is None else req.seed + i
        prompt = req.companion.prompt if req.companion is not None else "auto"
        job = chat_job(user, req.user, messages, {**opts, **_seed(seed)}, state.settings.personalization, prompt)
        return state.runner.run(user, req.model, job)

    if req.stream:
        include_usage = bool((getattr(req, "stream_options", None) or {}).get("include_usage"))
        state.open_stream(user, req.n)
        try:
            events = start(0)
            _, started = await _first(events)
        except BaseException:
            state.close_stream(user, req.n)
            raise
        return StreamingResponse(
            _chat_stream(state, user, events, cid, created, req.model, include_usage, req.n, start),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **_prompt_header(started[2])},
        )
    choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
    state.open_request(user, req.n)
    try:
        metas = [await _collect(request, start(i)) for i in range(req.n)]
    finally:
        state.close_request(user, req.n)
    for i, meta in enumerate(metas):
        choices.append(
            {
                "index": i,
                "message": _message(meta),
                "logprobs": chat_logprobs(meta.get("logprobs")),
                "finish_reason": meta["finish_reason"],
                "companion": _companion(meta),
            }
        )
        usage["prompt_tokens"] = meta["prompt_tokens"]
        usage["completion_tokens"] += meta["completion_tokens"]
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    body = {
        "id": cid,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage,
    }
    return JSONResponse(body, headers=_prompt_header(metas[0].get("prompt")))


def _prompt_header(prompt: dict[str, Any] | None) -> dict[str, str]:
    """`X-Companion-Prompt: client; dropped_messages=3; dropped_examples=1` (or `card`)."""
    if not prompt:
        return {}
    value = str(prompt.get("used"))
    fit = prompt.get("fit") or {}
    if fit.get("changed"):
        parts = [f"{k}={fit[k]}" for k in ("dropped_messages", "dropped_examples") if fit.get(k)]
        value += "; " + "; ".join([*parts, *(["shortened_system=1"] if fit.get("shortened_system") else [])])
    return {"X-Companion-Prompt": value}


async def _chat_stream(
    state: Any,
    user: str,
    events: AsyncIterator[tuple[str, Any]],
    cid: str,
    created: int,
    model: str,
    include_usage: bool,
    n: int = 1,
    start: Callable[[int], AsyncIterator[tuple[str, Any]]] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE chunks of `n` choices, one after another (each chunk names its `index`, as
    OpenAI's do); choice 0 is already running as `events`, `start(i)` runs the others."""

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        body = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": [choice],
        }
        if extra:
            choice.update(extra)
        return _sse(body)

    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    current = events
    try:
        for index in range(n):
            if index:
                await current.aclose()
                current = start(index)  # type: ignore[misc]
            yield chunk(index, {"role": "assistant", "content": ""})
            async for kind, value in current:
                if kind == "piece":
                    yield chunk(index, {"content": value})
                elif kind == "done":
                    if value.get("held"):  # tools: the answer was held back to see whether it is a call
                        if value["text"]:
                            yield chunk(index, {"content": value["text"]})
                        for k, call in enumerate(value.get("tool_calls") or []):
                            yield chunk(index, {"tool_calls": [{"index": k, **call}]})
                    lp = chat_logprobs(value.get("logprobs"))
                    yield chunk(index, {}, value["finish_reason"], companion=_companion(value), **_lp(lp))
                    usage["prompt_tokens"] = value["prompt_tokens"]
                    usage["completion_tokens"] += value["completion_tokens"]
        if include_usage:
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
            yield _sse({**body, "system_fingerprint": None, "choices": [], "usage": usage})
        yield _sse("[DONE]")
    except Exception as exc:  # mid-stream: the status is sent; say what happened in the stream
        from companion.server.errors import error_body, status_of
        from models.errors import CompanionError

        status = status_of(exc)[0] if isinstance(exc, CompanionError) else 500
        yield _sse(error_body(status, str(exc) or type(exc).__name__))
    finally:
        await current.aclose()
        state.close_stream(user, n)


# ----------------------------------------------------------------------------- completions


@router.post("/completions", summary="Text completion (OpenAI-compatible; stream=true for server-sent events)")
async def completions(req: CompletionRequest, request: Request, user: str = Depends(caller)) -> Any:
    state = _state(request)
    opts = sampling_options(req, state.settings.limits)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    prompts = [encodable(p, "prompt") for p in prompts]
    if not prompts or len(prompts) * req.n > state.settings.limits.max_n:
        raise APIError(400, f"between 1 and {state.settings.limits.max_n} completions per request", param="prompt")
    created = int(time.time())
    cid = f"cmpl-{uuid.uuid4().hex}"
    if req.stream:
        if len(prompts) * req.n != 1:
            raise APIError(400, "one prompt and n=1 with stream=true", param="prompt", code="invalid_value")
        return await _completion_stream(state, req, user, prompts[0], opts, cid, created)
    weight = len(prompts) * req.n
    state.open_request(user, weight)
    try:
        results = []
        for prompt in prompts:
            for i in range(req.n):
                seed = None if req.seed is None else req.seed + i
                job = completion_job(user, prompt, {**opts, **_seed(seed)}, state.settings.personalization)
                results.append(await _collect(request, state.runner.run(user, req.model, job)))
    finally:
        state.close_request(user, weight)
    choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
    for k, meta in enumerate(results):
        prompt = prompts[k // req.n]
        choices.append(
            {
                "index": k,
                "text": (prompt if req.echo else "") + meta["text"],
                "logprobs": completion_logprobs(meta.get("logprobs"), len(prompt) if req.echo else 0),
                "finish_reason": meta["finish_reason"],
                "companion": {"response_id": meta["response_id"]},
            }
        )
        usage["prompt_tokens"] += meta["prompt_tokens"]
        usage["completion_tokens"] += meta["completion_tokens"]
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {"id": cid, "object": "text_completion", "created": created, "model": req.model, "choices": choices,
            "usage": usage}  # fmt: skip


async def _completion_stream(
    state: Any, req: CompletionRequest, user: str, prompt: str, opts: dict[str, Any], cid: str, created: int
) -> StreamingResponse:
    """One completion as server-sent events; the stream's slot is held until the last event."""
    state.open_stream(user)
    try:
        events = state.runner.run(
            user, req.model, completion_job(user, prompt, {**opts, **_seed(req.seed)}, state.settings.personalization)
        )
        await _first(events)
    except BaseException:
        state.close_stream(user)
        raise

    def chunk(text: str, finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, **extra}
        return _sse({"id": cid, "object": "text_completion", "created": created, "model": req.model,
                     "choices": [choice]})  # fmt: skip

    async def stream() -> AsyncIterator[bytes]:
        try:
            if req.echo:
                yield chunk(prompt)
            async for kind, value in events:
                if kind == "piece":
                    yield chunk(value)
                elif kind == "done":
                    lp = completion_logprobs(value.get("logprobs"), len(prompt) if req.echo else 0)
                    yield chunk("", value["finish_reason"], companion={"response_id": value["response_id"]},
                                **_lp(lp))  # fmt: skip
            yield _sse("[DONE]")
        finally:
            await events.aclose()
            state.close_stream(user)

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
