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
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from companion.server.app import caller
from companion.server.errors import APIError
from companion.server.generation import SERVED
from companion.server.schemas import ChatMessage, ChatRequest, CompletionRequest
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


#: Largest image a request may carry inline (a data: URL), in characters of its base64.
MAX_IMAGE_CHARS = 8_000_000


def _text(message: ChatMessage, index: int) -> str:
    """The message's text (its text parts joined; image parts are taken by `_images`)."""
    content = message.content
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for k, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind != "image_url":
            raise APIError(400, f"content part {kind!r}: text and image_url parts are supported",
                           param=f"messages.{index}.content.{k}")  # fmt: skip
    return "".join(parts)


def _images(message: ChatMessage, index: int) -> list[dict[str, Any]]:
    """The message's image parts (OpenAI's `image_url`), checked: an http(s) URL or a data: image."""
    if not isinstance(message.content, list):
        return []
    out = []
    for k, part in enumerate(message.content):
        if part.get("type") != "image_url":
            continue
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, dict) else None
        where = f"messages.{index}.content.{k}.image_url"
        if not isinstance(url, str) or not re.match(r"(?:https?://|data:image/[a-z+.-]+;base64,)", url):
            raise APIError(400, "image_url.url: an http(s) URL or a data:image/...;base64, URL", param=where)
        if len(url) > MAX_IMAGE_CHARS:
            raise APIError(400, f"image_url.url: at most {MAX_IMAGE_CHARS:,} characters inline", param=where)
        out.append({"type": "image_url", "image_url": dict(spec)})
    return out


def _encodable(text: str, param: str) -> str:
    """`text` if it is valid Unicode text (JSON lets a client send a lone surrogate, `\\ud800`,
    which no tokenizer can encode), else a 400 naming the field."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(
            400, f"{param}: not valid Unicode text (a lone surrogate at {exc.start})", param=param, code="invalid_value"
        ) from None
    return text


def _messages(req: ChatRequest) -> list[dict[str, str]]:
    out = []
    for i, m in enumerate(req.messages):
        role = "system" if m.role == "developer" else m.role
        msg: dict[str, Any] = {"role": role, "content": _encodable(_text(m, i), f"messages.{i}.content")}
        if images := _images(m, i):
            msg["images"] = images
        if m.name:
            msg["name"] = _encodable(m.name, f"messages.{i}.name")
        extra = m.model_extra or {}
        if role == "tool":
            if not isinstance(extra.get("tool_call_id"), str):
                raise APIError(
                    400, "a tool message needs the tool_call_id it answers", param=f"messages.{i}.tool_call_id"
                )
            msg["tool_call_id"] = extra["tool_call_id"]
        if role == "assistant" and extra.get("tool_calls"):
            calls = extra["tool_calls"]
            if not isinstance(calls, list) or not all(isinstance(c, dict) and isinstance(c.get("function"), dict)
                                                      for c in calls):  # fmt: skip
                raise APIError(400, "tool_calls: a list of {id, type, function: {name, arguments}}",
                               param=f"messages.{i}.tool_calls")  # fmt: skip
            msg["tool_calls"] = calls
        out.append(msg)
    return out


def _refuse_unsupported(req: ChatRequest | CompletionRequest) -> None:
    """A 400 naming any OpenAI field we would otherwise drop while the client relies on it."""
    extra = req.model_extra or {}

    def refuse(field: str, why: str) -> None:
        raise APIError(400, f"{field}: {why}", param=field, code="unsupported_parameter")

    fmt = extra.get("response_format")
    if fmt is not None:
        from models.engines.structured import check_response_format

        if (problem := check_response_format(fmt)) is not None:
            raise APIError(400, f"response_format: {problem}", param="response_format")
    if extra.get("functions") or extra.get("function_call"):
        refuse("functions", "the deprecated functions/function_call: send tools and tool_choice")
    modalities = extra.get("modalities")
    if extra.get("audio") is not None or (modalities is not None and list(modalities) != ["text"]):
        refuse("audio" if extra.get("audio") is not None else "modalities", "only text is generated here")
    if extra.get("web_search_options") is not None:
        refuse("web_search_options", "this server does not search the web")
    if extra.get("suffix"):
        refuse("suffix", "insertion (text after the completion) is not supported")
    best_of = extra.get("best_of")
    if best_of not in (None, 1) and best_of != getattr(req, "n", 1):
        refuse("best_of", "choosing the best of several completions is not supported; use n")


def _options(req: ChatRequest | CompletionRequest, limits: Any) -> dict[str, Any]:
    """Sampling options for the library, after the server's limits."""
    if req.max_tokens is not None and req.max_tokens > limits.max_tokens:
        raise APIError(
            400, f"max_tokens is at most {limits.max_tokens} on this server", param="max_tokens", code="invalid_value"
        )
    if req.n > limits.max_n:
        raise APIError(400, f"n is at most {limits.max_n} on this server", param="n", code="invalid_value")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stop) > limits.max_stop or any(not s or len(s) > 200 for s in stop):
        raise APIError(
            400, f"stop: up to {limits.max_stop} non-empty sequences of at most 200 characters", param="stop"
        )
    _refuse_unsupported(req)
    max_completion = (req.model_extra or {}).get("max_completion_tokens")
    if max_completion is not None and req.max_tokens is None:  # OpenAI's newer name for max_tokens
        if isinstance(max_completion, bool) or not isinstance(max_completion, int) or max_completion < 1:
            raise APIError(400, "max_completion_tokens: a positive integer", param="max_completion_tokens")
        if max_completion > limits.max_tokens:
            raise APIError(
                400,
                f"max_completion_tokens is at most {limits.max_tokens} on this server",
                param="max_completion_tokens",
            )
        req.max_tokens = max_completion
    opts: dict[str, Any] = {"max_length": req.max_tokens or None}
    sampling = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty", "top_k", "min_p")
    for key in (*sampling, "repetition_penalty"):
        if getattr(req, key) is not None:
            opts[key] = getattr(req, key)
    if opts.get("top_p") == 0:  # only the most likely token is left: greedy
        opts.pop("top_p")
        opts["temperature"] = 0.0
    if stop:
        opts["stop"] = stop
    if req.logit_bias:
        opts["logit_bias"] = _logit_bias(req.logit_bias)
    fmt = (req.model_extra or {}).get("response_format")
    if fmt is not None and fmt.get("type") != "text":
        opts["response_format"] = fmt
    top = _logprobs(req)
    if top is not None:
        opts["logprobs"] = top
    if isinstance(req, ChatRequest):
        opts.update(_tools(req))
    return opts


def _tools(req: ChatRequest) -> dict[str, Any]:
    """`tools` and `tool_choice` as the library takes them (none, auto, required, or a name)."""
    extra = req.model_extra or {}
    tools, choice = extra.get("tools"), extra.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        return {}
    if not isinstance(tools, list) or len(tools) > 128:
        raise APIError(400, "tools: a list of up to 128 functions", param="tools")
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else None
        if not isinstance(name, str):
            raise APIError(400, "tool_choice: none, auto, required or {type: function, function: {name}}",
                           param="tool_choice")  # fmt: skip
        choice = name
    elif choice not in (None, "none", "auto", "required"):
        raise APIError(400, "tool_choice: none, auto, required or {type: function, function: {name}}",
                       param="tool_choice")  # fmt: skip
    return {"tools": tools, "tool_choice": choice or "auto"}


def _logprobs(req: ChatRequest | CompletionRequest) -> int | None:
    """How many top alternatives per token to return (None: no logprobs). Chat: `logprobs: true`
    and `top_logprobs` 0..20; completions: `logprobs` 0..5, as OpenAI takes them."""
    extra = req.model_extra or {}
    value, top = extra.get("logprobs"), extra.get("top_logprobs")
    if isinstance(req, ChatRequest):
        if value not in (None, True, False):
            raise APIError(400, "logprobs: true or false (top_logprobs says how many alternatives)", param="logprobs")
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
            raise APIError(400, "top_logprobs: an integer 0..20", param="top_logprobs")
        if top is not None and not value:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return int(top or 0) if value else None
    if value is None or value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 5:
        raise APIError(400, "logprobs: an integer 0..5 (alternatives per token)", param="logprobs")
    return value


def chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """OpenAI's chat `logprobs` object from the engine's per-token records."""
    if entries is None:
        return None

    def item(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": e["token"], "logprob": e["logprob"], "bytes": e["bytes"]}

    content = [{**item(e), "top_logprobs": [item(t) for t in e["top_logprobs"]]} for e in entries]
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
    """OpenAI's legacy completions `logprobs` object (tokens, token_logprobs, top_logprobs, text_offset)."""
    if entries is None:
        return None
    offsets, at = [], offset
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


#: Most entries in one request's `logit_bias` (ours: it keeps a request's work bounded).
MAX_LOGIT_BIAS = 300


def _logit_bias(raw: dict[str, float]) -> dict[int, float]:
    """OpenAI's `logit_bias` ({"token id": bias}) as the library takes it, checked."""
    if len(raw) > MAX_LOGIT_BIAS:
        raise APIError(400, f"logit_bias: at most {MAX_LOGIT_BIAS} tokens", param="logit_bias", code="invalid_value")
    out: dict[int, float] = {}
    for key, value in raw.items():
        if not re.fullmatch(r"[0-9]{1,9}", key):  # ASCII digits: str.isdigit() also takes "²"
            raise APIError(400, f"logit_bias: {key!r} is not a token id", param="logit_bias", code="invalid_value")
        if not -100 <= value <= 100:
            raise APIError(
                400, f"logit_bias[{key}] must be in [-100, 100], not {value}", param="logit_bias", code="invalid_value"
            )
        out[int(key)] = float(value)
    return out


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
    messages = _messages(req)
    opts = _options(req, state.settings.limits)
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
    opts = _options(req, state.settings.limits)
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    prompts = [_encodable(p, "prompt") for p in prompts]
    if not prompts or len(prompts) * req.n > state.settings.limits.max_n:
        raise APIError(400, f"between 1 and {state.settings.limits.max_n} completions per request", param="prompt")
    created = int(time.time())
    cid = f"cmpl-{uuid.uuid4().hex}"
    if req.stream:
        if len(prompts) * req.n != 1:
            raise APIError(400, "one prompt and n=1 with stream=true", param="prompt", code="invalid_value")
        state.open_stream(user)
        try:
            events = state.runner.run(
                user,
                req.model,
                completion_job(user, prompts[0], {**opts, **_seed(req.seed)}, state.settings.personalization),
            )
            await _first(events)
        except BaseException:
            state.close_stream(user)
            raise

        async def stream() -> AsyncIterator[bytes]:
            def chunk(text: str, finish: str | None = None, **extra: Any) -> bytes:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, **extra}
                return _sse(
                    {
                        "id": cid,
                        "object": "text_completion",
                        "created": created,
                        "model": req.model,
                        "choices": [choice],
                    }
                )

            try:
                if req.echo:
                    yield chunk(prompts[0])
                async for kind, value in events:
                    if kind == "piece":
                        yield chunk(value)
                    elif kind == "done":
                        lp = completion_logprobs(value.get("logprobs"), len(prompts[0]) if req.echo else 0)
                        yield chunk("", value["finish_reason"], companion={"response_id": value["response_id"]},
                                    **_lp(lp))  # fmt: skip
                yield _sse("[DONE]")
            finally:
                await events.aclose()
                state.close_stream(user)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    choices, usage = [], {"prompt_tokens": 0, "completion_tokens": 0}
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
    for k, meta in enumerate(results):
        p_index = k // req.n
        choices.append(
            {
                "index": k,
                "text": (prompts[p_index] if req.echo else "") + meta["text"],
                "logprobs": completion_logprobs(meta.get("logprobs"), len(prompts[p_index]) if req.echo else 0),
                "finish_reason": meta["finish_reason"],
                "companion": {"response_id": meta["response_id"]},
            }
        )
        usage["prompt_tokens"] += meta["prompt_tokens"]
        usage["completion_tokens"] += meta["completion_tokens"]
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    return {
        "id": cid,
        "object": "text_completion",
        "created": created,
        "model": req.model,
        "choices": choices,
        "usage": usage,
    }
